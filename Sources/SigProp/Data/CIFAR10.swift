/// The CIFAR-10 binary version (https://www.cs.toronto.edu/~kriz/cifar.html): records of one
/// label byte then 3×32×32 pixel bytes, channel-major (all red, then green, then blue), which
/// is already the C×H×W layout the layers use.
enum CIFAR10 {
    static let channels = 3, height = 32, width = 32, classes = 10
    static let imageBytes = channels * height * width
    static let recordBytes = 1 + imageBytes
    /// The folder the official archive (cifar-10-binary.tar.gz) unpacks to.
    static let subfolder = "cifar-10-batches-bin"

    static func fileNames(_ split: Dataset.Split) -> [String] {
        switch split {
        case .train: return (1...5).map { "data_batch_\($0).bin" }
        case .test: return ["test_batch.bin"]
        }
    }

    /// Appends the records of one batch file.
    static func append(_ bytes: [UInt8], path: String, images: inout [Float], labels: inout [Int32])
        throws
    {
        let fix =
            "use the CIFAR-10 binary version (cifar-10-binary.tar.gz), not the Python or MATLAB "
            + "one, and download it again if a file is damaged"
        guard !bytes.isEmpty else {
            throw SigPropError.dataset(path: path, problem: "the file is empty", fix: fix)
        }
        guard bytes.count % recordBytes == 0 else {
            // CIFAR-100's binary records carry two label bytes.
            let hint =
                bytes.count % (recordBytes + 1) == 0
                ? " (it is a multiple of 3074, the CIFAR-100 record: only CIFAR-10 is supported)"
                : ""
            throw SigPropError.dataset(
                path: path,
                problem:
                    "the file has \(bytes.count) bytes, not a multiple of the \(recordBytes)-byte "
                    + "CIFAR-10 record (1 label byte + 3×32×32 pixels)\(hint)",
                fix: fix)
        }
        let count = bytes.count / recordBytes
        let start = labels.count
        labels.reserveCapacity(start + count)
        images.reserveCapacity(images.count + count * imageBytes)
        try bytes.withUnsafeBufferPointer { source in
            for record in 0..<count {
                let offset = record * recordBytes
                let label = source[offset]
                guard Int(label) < classes else {
                    throw SigPropError.dataset(
                        path: path,
                        problem:
                            "label \(label) of record \(record) is not below the \(classes) "
                            + "classes",
                        fix: fix)
                }
                labels.append(Int32(label))
            }
            let first = images.count
            images.append(contentsOf: repeatElement(0, count: count * imageBytes))
            images.withUnsafeMutableBufferPointer { target in
                for record in 0..<count {
                    let from = record * recordBytes + 1
                    let to = first + record * imageBytes
                    for i in 0..<imageBytes { target[to + i] = Float(source[from + i]) / 255 }
                }
            }
        }
    }
}
