/// The IDX format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/): a
/// big-endian header (magic 0x0000TTDD: TT the element type, DD the number of dimensions,
/// then one UInt32 per dimension) followed by the elements. Only unsigned bytes are read:
/// 3-dimensional images and 1-dimensional labels.
///
/// Every size is checked against the buffer with overflow-checked arithmetic before any
/// element is touched, so no input reads out of bounds.
enum IDX {
    static let imagesMagic: UInt32 = 0x0000_0803
    static let labelsMagic: UInt32 = 0x0000_0801

    private static let fix =
        "pass MNIST-format IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-…; "
        + "gzipped or not), or download the file again if it is damaged"

    /// Images as `count × rows × columns` floats, pixel / 255.
    static func readImages(_ bytes: [UInt8], path: String) throws -> (
        count: Int, rows: Int, columns: Int, pixels: [Float]
    ) {
        let dims = try header(bytes, path: path, magic: imagesMagic)
        let (count, rows, columns) = (dims[0], dims[1], dims[2])
        guard rows > 0, columns > 0 else {
            throw SigPropError.dataset(
                path: path, problem: "the header describes images of \(rows)×\(columns) pixels",
                fix: fix)
        }
        let headerSize = 16
        let (perImage, o1) = rows.multipliedReportingOverflow(by: columns)
        let (total, o2) = perImage.multipliedReportingOverflow(by: count)
        guard !o1, !o2 else {
            throw SigPropError.dataset(
                path: path,
                problem:
                    "the header describes \(count) images of \(rows)×\(columns) pixels, more than "
                    + "can be addressed",
                fix: fix)
        }
        try checkLength(
            bytes, path: path, header: headerSize, payload: total,
            what: "\(count) images of \(rows)×\(columns) pixels")
        let pixels = [Float](unsafeUninitializedCapacity: total) { buffer, initialized in
            bytes.withUnsafeBufferPointer { source in
                for i in 0..<total { buffer[i] = Float(source[headerSize + i]) / 255 }
            }
            initialized = total
        }
        return (count, rows, columns, pixels)
    }

    /// Labels, each checked to be below `classes`.
    static func readLabels(_ bytes: [UInt8], path: String, classes: Int) throws -> [Int32] {
        let count = try header(bytes, path: path, magic: labelsMagic)[0]
        let headerSize = 8
        try checkLength(
            bytes, path: path, header: headerSize, payload: count, what: "\(count) labels")
        let payload = bytes[headerSize...]
        if let bad = payload.firstIndex(where: { Int($0) >= classes }) {
            throw SigPropError.dataset(
                path: path,
                problem:
                    "label \(bytes[bad]) of item \(bad - headerSize) is not below the \(classes) "
                    + "classes",
                fix:
                    "IDX data sets are read as \(classes)-class (MNIST, Fashion-MNIST); check "
                    + "that this is a labels file of such a set"
            )
        }
        return payload.map { Int32($0) }
    }

    /// Checks the magic number and returns the dimensions it promises.
    private static func header(_ bytes: [UInt8], path: String, magic: UInt32) throws -> [Int] {
        let dimensions = Int(magic & 0xff)
        let headerSize = 4 + 4 * dimensions
        guard bytes.count >= 4 else {
            throw SigPropError.dataset(
                path: path,
                problem:
                    "the file has \(bytes.count) bytes, too short for an IDX header "
                    + "(\(headerSize) bytes)",
                fix: fix)
        }
        let found = readUInt32(bytes, at: 0)
        guard found == magic else {
            throw SigPropError.dataset(
                path: path,
                problem:
                    "the magic number is \(hex(found)) (\(describe(found, bytes))), expected "
                    + "\(hex(magic)) (\(describe(magic, [])))",
                fix: fix)
        }
        guard bytes.count >= headerSize else {
            throw SigPropError.dataset(
                path: path,
                problem:
                    "the file is truncated: \(bytes.count) bytes, but the IDX header alone needs "
                    + "\(headerSize)",
                fix: fix)
        }
        return (0..<dimensions).map { Int(readUInt32(bytes, at: 4 + 4 * $0)) }
    }

    private static func checkLength(
        _ bytes: [UInt8], path: String, header: Int, payload: Int, what: String
    ) throws {
        let (expected, overflow) = header.addingReportingOverflow(payload)
        guard !overflow, bytes.count >= expected else {
            throw SigPropError.dataset(
                path: path,
                problem:
                    "the file is truncated: the header describes \(what), "
                    + "\(overflow ? "more than can be addressed" : "\(expected) bytes"), "
                    + "but the file has \(bytes.count) bytes",
                fix: fix)
        }
        guard bytes.count == expected else {
            throw SigPropError.dataset(
                path: path,
                problem:
                    "the file has \(bytes.count - expected) bytes more than the \(expected) its "
                    + "header describes (\(what))",
                fix: fix)
        }
    }

    /// Callers have checked that `offset + 4 <= bytes.count`.
    private static func readUInt32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2])
            << 8 | UInt32(bytes[offset + 3])
    }

    private static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }

    /// A reader's guess at what a magic number means, so a mixed-up file is recognisable.
    private static func describe(_ magic: UInt32, _ bytes: [UInt8]) -> String {
        if bytes.starts(with: Array("<!DOCTYPE".utf8)) || bytes.starts(with: Array("<html".utf8))
            || bytes.starts(with: Array("<HTML".utf8))
        {
            return "an HTML page, likely a failed download"
        }
        if magic == imagesMagic { return "IDX images: unsigned bytes, 3 dimensions" }
        if magic == labelsMagic { return "IDX labels: unsigned bytes, 1 dimension" }
        let types: [UInt32: String] = [
            0x08: "unsigned bytes", 0x09: "signed bytes", 0x0b: "shorts", 0x0c: "ints",
            0x0d: "floats", 0x0e: "doubles",
        ]
        if magic >> 16 == 0, let type = types[(magic >> 8) & 0xff] {
            return "IDX \(type), \(magic & 0xff) dimensions"
        }
        return "not an IDX file"
    }
}
