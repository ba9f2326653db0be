// libFuzzer target for the data set readers (Sources/SigProp/Data): IDX images and labels,
// gzip, CIFAR-10 binary. Built and run by Fuzz/run, which compiles this file together with
// the reader sources (one module, so the readers' internal API is reachable).
//
// The first input byte picks the reader (selector % 5), the rest is the file:
//   0  IDX images   DataFile.decode (gunzip when the bytes are gzip) then IDX.readImages
//   1  IDX labels   DataFile.decode then IDX.readLabels (10 classes)
//   2  CIFAR-10     DataFile.decode then CIFAR10.append onto one existing record
//   3  gzip         Gzip.decompress of the raw bytes (gzip or not), output limit from selector / 5
//   4  round trip   deflate the bytes with zlib, inflate them under a limit just around their size
// Any error must be a SigPropError.dataset naming the file; a result must be consistent
// with its input. Anything else traps, which libFuzzer reports as a crash.

import Foundation

private let path = "fuzz-input"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let selector = Int(data[0])
    let file = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    let variant = selector / 5  // 0...51
    switch selector % 5 {
    case 0: fuzzImages(file)
    case 1: fuzzLabels(file)
    case 2: fuzzCIFAR(file)
    case 3:
        fuzzGzip(file, limit: variant == 0 ? Gzip.outputLimit : (variant - 1) * (variant - 1) * 4)
    default: fuzzRoundTrip(file, slack: variant % 5 - 2)
    }
    return 0
}

/// Runs `body`; an error must be the readers' own data set error, naming the file.
private func expectResultOrDatasetError<T>(_ body: () throws -> T) -> T? {
    do {
        return try body()
    } catch let error as SigPropError {
        guard case .dataset(let errorPath, let problem, let fix) = error, errorPath == path,
            !problem.isEmpty, !fix.isEmpty
        else {
            fatalError("unexpected error: \(error)")
        }
        _ = error.description  // formatting the message must not trap either
        return nil
    } catch {
        fatalError("an error that is not a SigPropError: \(error)")
    }
}

private func fuzzImages(_ file: [UInt8]) {
    guard let bytes = expectResultOrDatasetError({ try DataFile.decode(file, path: path) }),
        let images = expectResultOrDatasetError({ try IDX.readImages(bytes, path: path) })
    else { return }
    let total = images.count * images.rows * images.columns
    precondition(images.rows > 0 && images.columns > 0 && images.count >= 0)
    precondition(
        bytes.count == 16 + total && images.pixels.count == total, "sizes disagree with the file")
    for i in 0..<total {
        precondition(
            images.pixels[i] == Float(bytes[16 + i]) / 255,
            "pixel \(i) is not the file's byte / 255")
    }
}

private func fuzzLabels(_ file: [UInt8]) {
    guard let bytes = expectResultOrDatasetError({ try DataFile.decode(file, path: path) }),
        let labels = expectResultOrDatasetError({
            try IDX.readLabels(bytes, path: path, classes: 10)
        })
    else { return }
    precondition(bytes.count == 8 + labels.count, "label count disagrees with the file")
    for (i, label) in labels.enumerated() {
        precondition(
            label >= 0 && label < 10 && label == Int32(bytes[8 + i]), "label \(i) is wrong")
    }
}

private func fuzzCIFAR(_ file: [UInt8]) {
    guard let bytes = expectResultOrDatasetError({ try DataFile.decode(file, path: path) }) else {
        return
    }
    // One record already loaded, as when a second batch file is appended.
    var images = [Float](repeating: 0.5, count: CIFAR10.imageBytes)
    var labels: [Int32] = [9]
    guard
        expectResultOrDatasetError({
            try CIFAR10.append(bytes, path: path, images: &images, labels: &labels)
        }) != nil
    else {
        return
    }
    let count = labels.count - 1
    precondition(
        count >= 1 && bytes.count == count * CIFAR10.recordBytes,
        "record count disagrees with the file")
    precondition(
        images.count == labels.count * CIFAR10.imageBytes, "image and label counts disagree")
    precondition(
        labels[0] == 9 && images[0..<CIFAR10.imageBytes].allSatisfy { $0 == 0.5 },
        "the earlier record changed")
    for record in 0..<count {
        let label = labels[1 + record]
        precondition(
            label >= 0 && label < 10 && label == Int32(bytes[record * CIFAR10.recordBytes]),
            "label of record \(record) is wrong")
        for i in 0..<CIFAR10.imageBytes {
            precondition(
                images[(1 + record) * CIFAR10.imageBytes + i] == Float(
                    bytes[record * CIFAR10.recordBytes + 1 + i]) / 255,
                "pixel \(i) of record \(record) is wrong")
        }
    }
}

private func fuzzGzip(_ file: [UInt8], limit: Int) {
    let limited = expectResultOrDatasetError { try Gzip.decompress(file, path: path, limit: limit) }
    if let limited {
        precondition(
            limited.count <= limit, "\(limited.count) bytes out, over the limit of \(limit)")
    }
    guard limit < Gzip.outputLimit else { return }
    // The limit only stops output: with the default limit the result is the same, or longer
    // than this limit (the error was the limit), or an error for damage past the limit.
    let full = expectResultOrDatasetError { try Gzip.decompress(file, path: path) }
    if let limited { precondition(full == limited, "the result depends on the limit") }
    if let full, full.count <= limit {
        precondition(limited == full, "output within the limit was refused")
    }
}

/// A well-formed gzip stream inflates to its input, and the limit is exact: `count` bytes
/// pass a limit of `count` and fail one of `count - 1`.
private func fuzzRoundTrip(_ file: [UInt8], slack: Int) {
    let packed = try! Gzip.compress(file)
    let limit = max(0, file.count + slack)
    let result = expectResultOrDatasetError {
        try Gzip.decompress(packed, path: path, limit: limit)
    }
    if file.count <= limit {
        precondition(result == file, "round trip changed the data")
    } else {
        precondition(result == nil, "\(file.count) bytes passed a limit of \(limit)")
    }
    precondition(
        expectResultOrDatasetError({ try DataFile.decode(packed, path: path) }) == file,
        "decode changed the data")
}
