// swift-tools-version:6.1
// Kernel microbenchmarks, a package of their own so that the main package's build and tests
// never compile package-benchmark. Run: `cd Benchmarks && swift package benchmark`.
import PackageDescription

let package = Package(
    name: "SigPropBenchmarks",
    dependencies: [
        .package(name: "SigProp", path: ".."),
        // MallocInterposer instead of jemalloc: no extra system package needed.
        .package(
            url: "https://github.com/ordo-one/benchmark", from: "1.38.1",
            traits: ["MallocInterposer"]),
    ],
    targets: [
        // The anchors' C APIs: OpenCL (own context and buffers), CLBlast and OpenBLAS's CBLAS.
        // The main package's COpenCL and CBLAS targets are not products, hence this module.
        .systemLibrary(
            name: "CAnchors",
            providers: [
                .apt(["libclblast-dev", "ocl-icd-opencl-dev", "opencl-headers", "libopenblas-dev"])
            ]
        ),
        .executableTarget(
            name: "KernelBenchmarks",
            dependencies: [
                .product(name: "SigProp", package: "SigProp"),
                .product(name: "Benchmark", package: "benchmark"),
                "CAnchors",
            ],
            path: "Benchmarks/KernelBenchmarks",
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "benchmark")
            ]
        ),
    ]
)
