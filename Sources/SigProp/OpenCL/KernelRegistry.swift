/// Compile-time constants for the kernels, chosen per device (CLBlast-style): each `.cl` file
/// compiles on its own with its defaults; the host prepends `-D` values that fit the device.
/// Codable: the tuning cache stores them (`KernelTuningCache`).
struct KernelParameters: Equatable, Sendable, Codable {
    /// Which gemm kernels a device runs for products too large for `gemm_direct`.
    enum GemmKernels: String, Sendable, Codable {
        /// `gemm_outer` (NN, TN, TT) and `gemm_dot` (NT): vector registers, no local memory.
        /// For CPU drivers (PoCL), where local memory is ordinary memory and barriers split a
        /// kernel into loops over work-items.
        case registerBlocked
        /// `gemm_tiled`: local-memory tiles shared by a work-group. For GPUs.
        case localTiled
    }

    var gemmKernels: GemmKernels
    /// Side of the square `gemm_tiled` work-group (`TILE_M / WPT_M` = `TILE_N / WPT_N`).
    var gemmTile: Int
    /// `gemm_tiled`: elements of C per work-item in each direction (`WPT_M`, `WPT_N`).
    var gemmWorkPerItem: Int
    /// `gemm_tiled`: depth of the local tiles (`TILE_K`).
    var gemmTileDepth: Int
    /// `gemm_outer`: float vector width along N (`VW`: 2, 4, 8 or 16).
    var gemmVectorWidth: Int
    /// `gemm_outer`: rows (`OUTER_M`) and vectors of columns (`OUTER_V`) per work-item.
    var gemmOuterRows: Int
    var gemmOuterVectors: Int
    /// `gemm_dot`: float vector width along K (`DOT_VW`: 2, 4, 8 or 16), rows (`DOT_M`) and
    /// columns (`DOT_N`) of C per work-item.
    var gemmDotVectorWidth: Int
    var gemmDotRows: Int
    var gemmDotColumns: Int
    /// Products of fewer multiply-adds (M * N * K) than this go to `gemm_direct`: launch
    /// cost and edge waste outweigh the tiles there (CLBlast's direct/indirect switch).
    var gemmDirectBelow: Int
    /// `gemm_tiled`: a single product whose C has fewer tiles than this splits K, for about
    /// twice this many groups (`gemm_tiled_partial`, then `gemm_splitk_sum`), so the thin
    /// products of training (128 rows; a convolution's weight gradient, K = batch x positions)
    /// fill a GPU. 0: never (CPU devices, whose few cores the tiles already fill).
    var gemmSplitBelow: Int

    /// `gemm_tiled`'s local memory: two tiles, each row padded by one float.
    var gemmTiledLocalBytes: Int { gemmTileDepth * (2 * gemmTile * gemmWorkPerItem + 2) * 4 }

    /// What every device starts from: the portable local-memory kernel in small groups.
    static let portable = KernelParameters(
        gemmKernels: .localTiled, gemmTile: 8, gemmWorkPerItem: 2, gemmTileDepth: 8,
        gemmVectorWidth: 4, gemmOuterRows: 4, gemmOuterVectors: 2,
        gemmDotVectorWidth: 4, gemmDotRows: 2, gemmDotColumns: 2,
        gemmDirectBelow: 32 * 32 * 32, gemmSplitBelow: 0)

    /// The table: device kind, then what the device's name says about its vector units, then
    /// the device's limits. Every device resolves to a value.
    static func forDevice(_ info: OpenCLDeviceInfo) -> KernelParameters {
        var p = portable
        switch info.kind {
        case .gpu:
            // 64 x 64 outputs per group of 16 x 16, 4 x 4 per work-item, 16 deep: 8.3 KB local.
            p.gemmTile = 16
            p.gemmWorkPerItem = 4
            p.gemmTileDepth = 16
            p.gemmDirectBelow = 64 * 64 * 64
            // A tile per compute unit: a 128-row product has far fewer tiles than a large GPU
            // has units, and a convolution's weight gradient few tiles with a deep K; unsplit,
            // most units idle (docs/performance.md, kernels on an NVIDIA H200).
            p.gemmSplitBelow = info.computeUnits
        case .cpu:
            p.gemmKernels = .registerBlocked
            // gemm_dot reduces its partial sums once per element: one register of lanes.
            p.gemmDotVectorWidth = 8
            if wide(info) {
                // AVX-512: 8 rows x 2 float16 = 16 of the 32 vector registers accumulate;
                // 4 x 4 dot products in float16 (16 registers, 8 for loads): the tuner's pick
                // over float8 on AVX-512 CPUs (docs/performance.md, kernels on a CPU).
                (p.gemmVectorWidth, p.gemmOuterRows, p.gemmOuterVectors) = (16, 8, 2)
                (p.gemmDotVectorWidth, p.gemmDotRows, p.gemmDotColumns) = (16, 4, 4)
            } else {
                // AVX2 (16 vector registers): the classic 6 x 16 block, 3 x 3 dot products.
                (p.gemmVectorWidth, p.gemmOuterRows, p.gemmOuterVectors) = (8, 6, 2)
                (p.gemmDotRows, p.gemmDotColumns) = (3, 3)
            }
        case .accelerator, .other:
            break
        }
        // `gemm_tiled` is built on every device (one program), so its work-group and local
        // tiles must fit even where it never runs: shrink the group to the work-group limit,
        // then the depth down to 8, the work per item, the depth, the group.
        while p.gemmTile > 1 && p.gemmTile * p.gemmTile > info.maxWorkGroupSize { p.gemmTile /= 2 }
        let local = Int(clamping: info.localMemoryBytes)
        while p.gemmTiledLocalBytes > local {
            if p.gemmTileDepth > 8 {
                p.gemmTileDepth /= 2
            } else if p.gemmWorkPerItem > 1 {
                p.gemmWorkPerItem /= 2
            } else if p.gemmTileDepth > 1 {
                p.gemmTileDepth /= 2
            } else if p.gemmTile > 1 {
                p.gemmTile /= 2
            } else {
                break
            }
        }
        return p
    }

    /// Whether every kernel of every program builds and launches within the device's limits:
    /// `gemm_tiled`'s group and local tiles (built on every device) and the vector widths
    /// OpenCL C has. The table always fits; tuning candidates and cache entries are checked.
    func fits(_ info: OpenCLDeviceInfo) -> Bool {
        let widths = [2, 4, 8, 16]
        return widths.contains(gemmVectorWidth) && widths.contains(gemmDotVectorWidth)
            && [
                gemmTile, gemmWorkPerItem, gemmTileDepth, gemmOuterRows, gemmOuterVectors,
                gemmDotRows, gemmDotColumns,
            ].allSatisfy { $0 >= 1 }
            && gemmDirectBelow >= 0 && gemmSplitBelow >= 0
            && gemmTile * gemmTile <= info.maxWorkGroupSize
            && UInt64(gemmTiledLocalBytes) <= info.localMemoryBytes
    }

    /// Whether a CPU device has 512-bit vectors. PoCL names its devices after the LLVM CPU
    /// ("pthread-skylake-avx512-...", "cpu-znver4-..."); other drivers get the AVX2 shape.
    private static func wide(_ info: OpenCLDeviceInfo) -> Bool {
        let name = info.name.lowercased()
        return [
            "avx512", "znver4", "znver5", "skx", "cascadelake", "cooperlake", "icelake",
            "tigerlake", "rocketlake",
            "sapphirerapids", "emeraldrapids", "graniterapids",
        ].contains { name.contains($0) }
    }

    /// The values that matter on a device of this family, e.g. for tuning progress.
    var summary: String {
        switch gemmKernels {
        case .registerBlocked:
            "gemm_outer \(gemmOuterRows)x\(gemmOuterVectors)xfloat\(gemmVectorWidth), gemm_dot "
                + "\(gemmDotRows)x\(gemmDotColumns)xfloat\(gemmDotVectorWidth)"
        case .localTiled:
            "gemm_tiled group \(gemmTile)x\(gemmTile), \(gemmWorkPerItem)x\(gemmWorkPerItem) per "
                + "item, depth \(gemmTileDepth)"
                + (gemmSplitBelow > 0 ? ", split K below \(gemmSplitBelow) tiles" : "")
        }
    }

    /// `-D` definitions for one program.
    func defines(for program: String) -> [String: Int] {
        // The register tiles (common.cl) of gemm_outer / gemm_dot and conv.cl's direct kernels.
        let registerTiles = [
            "VW": gemmVectorWidth, "OUTER_M": gemmOuterRows, "OUTER_V": gemmOuterVectors,
            "DOT_VW": gemmDotVectorWidth, "DOT_M": gemmDotRows, "DOT_N": gemmDotColumns,
        ]
        switch program {
        case "gemm":
            return registerTiles.merging([
                "TILE_M": gemmTile * gemmWorkPerItem, "TILE_N": gemmTile * gemmWorkPerItem,
                "TILE_K": gemmTileDepth,
                "WPT_M": gemmWorkPerItem, "WPT_N": gemmWorkPerItem,
            ]) { tile, _ in tile }
        case "conv":
            return registerTiles
        default:
            return [:]
        }
    }
}

/// The kernel programs: name -> source (embedded from Kernels/*.cl at build time) -> options.
/// `common.cl` is prepended to every program; each other file is one program.
enum KernelRegistry {
    static let commonName = "common"

    static var programNames: [String] {
        EmbeddedKernels.sources.keys.filter { $0 != commonName }.sorted()
    }

    static func source(of program: String) -> String? {
        guard let body = EmbeddedKernels.sources[program] else { return nil }
        return (EmbeddedKernels.sources[commonName] ?? "") + "\n" + body
    }

    /// Build options: OpenCL C 1.2 and the device's parameters. No fast-math flags: training
    /// must see NaN and Inf to stop on them.
    static func options(for program: String, parameters: KernelParameters) -> String {
        let defines = parameters.defines(for: program).sorted { $0.key < $1.key }.map {
            "-D\($0.key)=\($0.value)"
        }
        return (["-cl-std=CL1.2"] + defines).joined(separator: " ")
    }
}
