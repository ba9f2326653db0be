import CZlib
import Foundation

/// Reads a data set file whole. Gzip files are recognised by their magic bytes (1f 8b), not by
/// the name, so a `.gz` that was already unpacked, or an unpacked file that kept its `.gz`
/// name, both load.
enum DataFile {
    static func read(_ url: URL) throws -> [UInt8] {
        let path = url.path
        let bytes: [UInt8]
        do {
            bytes = try FileSystemError.read(path)
        } catch {
            throw SigPropError.dataset(
                path: path, problem: "cannot be read: \(error.reason)",
                fix: "give --data-dir a folder whose data files you may read")
        }
        return try decode(bytes, path: path)
    }

    /// A file's bytes as the readers parse them: inflated when they are gzip data. `read`
    /// goes through here, and so does the fuzz target (Fuzz/), which has no files.
    static func decode(_ bytes: [UInt8], path: String) throws -> [UInt8] {
        Gzip.isGzip(bytes) ? try Gzip.decompress(bytes, path: path) : bytes
    }
}

/// Whole-buffer gzip decompression through zlib (Foundation on Linux has none).
enum Gzip {
    /// `input` as one gzip member (zlib's deflate; windowBits 15 + 16 writes the gzip header
    /// and trailer). The readers never write gzip: the tests and the fuzz target make their
    /// inputs with this.
    static func compress(_ input: [UInt8]) throws -> [UInt8] {
        var stream = z_stream()
        let status = deflateInit2_(
            &stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY,
            zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard status == Z_OK else {
            throw SigPropError.configuration("zlib's deflateInit2_ failed with status \(status)")
        }
        defer { deflateEnd(&stream) }
        var output = [UInt8](
            repeating: 0, count: Int(deflateBound(&stream, uLong(input.count))) + 64)
        var input = input
        let result = input.withUnsafeMutableBufferPointer { source in
            output.withUnsafeMutableBufferPointer { target in
                stream.next_in = source.baseAddress
                stream.avail_in = UInt32(source.count)
                stream.next_out = target.baseAddress
                stream.avail_out = UInt32(target.count)
                return deflate(&stream, Z_FINISH)
            }
        }
        guard result == Z_STREAM_END else {
            throw SigPropError.configuration("zlib's deflate returned \(result)")
        }
        return Array(output[0..<Int(stream.total_out)])
    }

    static func isGzip(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
    }

    /// The most bytes one data set file may unpack to. The largest MNIST-format sets (EMNIST
    /// ByClass, 0.55 GB of training images) fit; a damaged file or a "zip bomb" (deflate
    /// packs up to about 1032:1) is stopped here instead of exhausting memory.
    static let outputLimit = 1 << 30

    /// Inflates every gzip member of `input` in turn (`cat a.gz b.gz` is a valid gzip file and
    /// gzip(1) unpacks it to both parts). Trailing zero bytes after the last member are
    /// ignored, as gzip(1) does; anything else there is reported as corrupt. More than `limit`
    /// bytes of output, over all members, is an error.
    static func decompress(_ input: [UInt8], path: String, limit: Int = outputLimit) throws
        -> [UInt8]
    {
        let fix =
            "download the file again (a partial download or a full disk leaves it damaged); `gzip "
            + "-t \(path)` checks it"
        func corrupt(_ message: String) -> SigPropError {
            .dataset(path: path, problem: "gzip data is corrupt (zlib: \(message))", fix: fix)
        }
        let truncated = corrupt(
            "unexpected end of input: the file ends inside the compressed stream, so it is "
                + "truncated"
        )
        guard !input.isEmpty else { throw truncated }
        let limit = max(0, limit)
        // One byte of room past the limit tells "exactly the limit" from "more".
        let ceiling = limit == Int.max ? limit : limit + 1
        let tooLarge = SigPropError.dataset(
            path: path,
            problem:
                "gzip data unpacks to more than \(formatBytes(UInt64(limit))) (\(limit) bytes), "
                + "the limit for one data set file",
            fix:
                "check that this is a data set file (MNIST-format IDX or CIFAR-10 binary); a "
                + "damaged or foreign .gz can claim any size"
        )

        var stream = z_stream()
        // 15 + 32: the largest window, and let zlib recognise the gzip (or zlib) header itself.
        var status = inflateInit2_(
            &stream, 15 + 32, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard status == Z_OK else { throw corrupt(zlibMessage(stream, status)) }
        defer { inflateEnd(&stream) }

        var output = [UInt8](repeating: 0, count: min(initialCapacity(input), ceiling))
        var produced = 0
        try input.withUnsafeBufferPointer { source in
            guard let base = source.baseAddress else { throw truncated }
            var consumed = 0
            while true {
                if produced == output.count {
                    // Double, but never past `ceiling`; at least 1 byte so an empty start grows.
                    let grown = min(ceiling, max(1, output.count) * 2)
                    output.append(contentsOf: repeatElement(0, count: grown - output.count))
                }
                // avail_in and avail_out are 32-bit: feed larger buffers in pieces.
                let offered = min(source.count - consumed, Int(UInt32.max))
                stream.next_in = UnsafeMutablePointer(mutating: base + consumed)
                stream.avail_in = UInt32(offered)
                status = output.withUnsafeMutableBufferPointer { target in
                    let room = min(target.count - produced, Int(UInt32.max))
                    stream.next_out = target.baseAddress.map { $0 + produced }
                    stream.avail_out = UInt32(room)
                    let result = inflate(&stream, Z_NO_FLUSH)
                    produced += room - Int(stream.avail_out)
                    return result
                }
                consumed += offered - Int(stream.avail_in)
                if produced > limit { throw tooLarge }

                switch status {
                case Z_OK:
                    continue
                case Z_BUF_ERROR:
                    // No progress. The output had room (it grows before each call), so the
                    // input ran out before the stream ended.
                    if consumed == source.count { throw truncated }
                case Z_STREAM_END:
                    let rest = source[consumed...]
                    if rest.isEmpty || rest.allSatisfy({ $0 == 0 }) { return }
                    guard rest.count >= 2, rest[consumed] == 0x1f, rest[consumed + 1] == 0x8b else {
                        throw corrupt(
                            "\(rest.count) bytes after the end of the gzip stream are not another "
                                + "gzip member"
                        )
                    }
                    status = inflateReset(&stream)
                    guard status == Z_OK else { throw corrupt(zlibMessage(stream, status)) }
                default:
                    throw corrupt(zlibMessage(stream, status))
                }
            }
        }
        output.removeSubrange(produced...)
        return output
    }

    /// The gzip trailer's last four bytes hold the (last member's) size mod 2^32; use it as a
    /// first guess, capped by deflate's best ratio (about 1032:1) so a damaged trailer cannot
    /// ask for an absurd allocation.
    private static func initialCapacity(_ input: [UInt8]) -> Int {
        let minimum = 1 << 16
        guard input.count >= 18 else { return minimum }
        let n = input.count
        let size =
            Int(input[n - 4]) | Int(input[n - 3]) << 8 | Int(input[n - 2]) << 16 | Int(input[n - 1])
            << 24
        let (bound, overflow) = n.multipliedReportingOverflow(by: 1032)
        return max(minimum, overflow ? size : min(size, bound))
    }

    private static func zlibMessage(_ stream: z_stream, _ status: Int32) -> String {
        if let message = stream.msg { return String(cString: message) }
        switch status {
        case Z_DATA_ERROR: return "invalid compressed data"
        case Z_MEM_ERROR: return "out of memory"
        case Z_NEED_DICT: return "a preset dictionary is needed"
        case Z_STREAM_ERROR: return "inconsistent stream state"
        case Z_VERSION_ERROR: return "incompatible zlib version"
        default: return "status \(status)"
        }
    }
}
