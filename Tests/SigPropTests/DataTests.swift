import Foundation
import Testing

@testable import SigProp

// MARK: - Helpers

/// A fresh folder under the temporary directory, removed when the test's closure returns.
private func withTemporaryFolder<T>(_ body: (URL) throws -> T) throws -> T {
    let folder = FileManager.default.temporaryDirectory
        .appendingPathComponent("sigprop-data-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    return try body(folder)
}

func bigEndian(_ value: UInt32) -> [UInt8] {
    [
        UInt8(value >> 24), UInt8((value >> 16) & 0xff), UInt8((value >> 8) & 0xff),
        UInt8(value & 0xff),
    ]
}

func idxImages(_ pixels: [UInt8], count: Int, rows: Int, columns: Int) -> [UInt8] {
    bigEndian(0x803) + bigEndian(UInt32(count)) + bigEndian(UInt32(rows))
        + bigEndian(UInt32(columns)) + pixels
}

func idxLabels(_ labels: [UInt8]) -> [UInt8] {
    bigEndian(0x801) + bigEndian(UInt32(labels.count)) + labels
}

private func write(_ bytes: [UInt8], _ folder: URL, _ name: String) throws {
    try Data(bytes).write(to: folder.appendingPathComponent(name))
}

/// Runs `body`, expects a `SigPropError.dataset`, and checks that its message contains each
/// of `parts`. Returns the message for further checks.
@discardableResult
private func expectDatasetError(
    _ parts: [String], sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) -> String {
    do {
        try body()
        Issue.record(
            "expected a data set error containing \(parts), got none",
            sourceLocation: sourceLocation)
        return ""
    } catch let error as SigPropError {
        let message = error.description
        guard case .dataset = error else {
            Issue.record(
                "expected a data set error, got: \(message)", sourceLocation: sourceLocation)
            return message
        }
        for part in parts where !message.contains(part) {
            Issue.record(
                "the message does not contain \"\(part)\": \(message)",
                sourceLocation: sourceLocation)
        }
        return message
    } catch {
        Issue.record("expected a SigPropError, got \(error)", sourceLocation: sourceLocation)
        return ""
    }
}

/// A small MNIST-like set: `count` images of 3×4 pixels with known bytes.
private struct TinyIDX {
    let count: Int, rows = 3, columns = 4
    var pixels: [UInt8] { (0..<(count * rows * columns)).map { UInt8(($0 * 7) % 256) } }
    var labels: [UInt8] { (0..<count).map { UInt8($0 % 10) } }
    var imagesFile: [UInt8] { idxImages(pixels, count: count, rows: rows, columns: columns) }
    var labelsFile: [UInt8] { idxLabels(labels) }

    func write(to folder: URL, prefix: String = "train", gzipped: Bool = false) throws {
        let suffix = gzipped ? ".gz" : ""
        try SigPropTests.write(
            gzipped ? try Gzip.compress(imagesFile) : imagesFile, folder,
            "\(prefix)-images-idx3-ubyte\(suffix)")
        try SigPropTests.write(
            gzipped ? try Gzip.compress(labelsFile) : labelsFile, folder,
            "\(prefix)-labels-idx1-ubyte\(suffix)")
    }
}

// MARK: - Gzip

@Suite struct DataTests {
    @Test func gzipRoundTripsAndReadsEveryMember() throws {
        let first = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 / 7) }
        let second = Array("second member".utf8)
        #expect(try Gzip.decompress(try Gzip.compress(first), path: "a.gz") == first)
        #expect(
            try Gzip.decompress(
                try Gzip.compress(first) + (try Gzip.compress(second)), path: "a.gz") == first
                + second)
        // Zero padding after the last member is ignored, as gzip(1) does.
        #expect(
            try Gzip.decompress(try Gzip.compress(second) + [0, 0, 0, 0], path: "a.gz") == second)
        #expect(try Gzip.decompress(try Gzip.compress([]), path: "a.gz") == [])
    }

    @Test func corruptOrTruncatedGzipIsReported() throws {
        let packed = try Gzip.compress((0..<50_000).map { UInt8(truncatingIfNeeded: $0 * $0) })
        let fix = "Download the file again"

        var damaged = packed
        for i in 20..<60 { damaged[i] ^= 0x5a }
        expectDatasetError(["data set x.gz", "gzip data is corrupt (zlib: ", fix]) {
            _ = try Gzip.decompress(damaged, path: "x.gz")
        }

        let truncated = Array(packed.prefix(packed.count / 2))
        expectDatasetError(["x.gz", "gzip data is corrupt (zlib: ", "truncated", fix]) {
            _ = try Gzip.decompress(truncated, path: "x.gz")
        }
        expectDatasetError(["x.gz", "truncated"]) {
            _ = try Gzip.decompress([0x1f, 0x8b], path: "x.gz")
        }
        expectDatasetError(["x.gz", "not another gzip member"]) {
            _ = try Gzip.decompress(packed + [1, 2, 3], path: "x.gz")
        }
        // A damaged trailer (CRC) is caught too.
        var badTrailer = packed
        badTrailer[badTrailer.count - 6] ^= 0xff
        expectDatasetError(["x.gz", "gzip data is corrupt"]) {
            _ = try Gzip.decompress(badTrailer, path: "x.gz")
        }
    }

    // MARK: - IDX

    @Test(arguments: [false, true]) func loadsIDX(gzipped: Bool) throws {
        let tiny = TinyIDX(count: 5)
        try withTemporaryFolder { folder in
            try tiny.write(to: folder, gzipped: gzipped)
            try TinyIDX(count: 2).write(to: folder, prefix: "t10k", gzipped: gzipped)
            let train = try Dataset.load(directory: folder, split: .train)
            #expect(train.count == 5)
            #expect((train.channels, train.height, train.width) == (1, 3, 4))
            #expect(train.featureCount == 12)
            #expect(train.classes == 10)
            #expect(train.format == .idx)
            #expect(train.labels == tiny.labels.map { Int32($0) })
            expectClose(
                train.images, tiny.pixels.map { Float($0) / 255 }, absolute: 0, relative: 0,
                "pixels")
            #expect(try Dataset.load(directory: folder, split: .test).count == 2)
            #expect(Dataset.detectFormat(directory: folder) == .idx)
        }
    }

    @Test func gzipIsRecognisedByContentNotName() throws {
        let tiny = TinyIDX(count: 3)
        try withTemporaryFolder { folder in
            // Gzip data under the plain name, plain data under the .gz name.
            try write(try Gzip.compress(tiny.imagesFile), folder, "train-images-idx3-ubyte")
            try write(tiny.labelsFile, folder, "train-labels-idx1-ubyte.gz")
            let train = try Dataset.load(directory: folder, split: .train)
            #expect(train.count == 3)
            #expect(train.labels == tiny.labels.map { Int32($0) })
        }
    }

    @Test func idxWrongMagicSaysWhatWasFoundAndExpected() throws {
        let tiny = TinyIDX(count: 2)
        try withTemporaryFolder { folder in
            // The labels file where the images belong.
            try write(tiny.labelsFile, folder, "train-images-idx3-ubyte")
            try write(tiny.labelsFile, folder, "train-labels-idx1-ubyte")
            expectDatasetError([
                "train-images-idx3-ubyte", "magic number is 0x00000801", "IDX labels",
                "expected 0x00000803", "MNIST-format IDX",
            ]) {
                _ = try Dataset.load(directory: folder, split: .train)
            }
            try write(Array("<!DOCTYPE html><html>".utf8), folder, "train-images-idx3-ubyte")
            expectDatasetError(["HTML page"]) {
                _ = try Dataset.load(directory: folder, split: .train)
            }
        }
    }

    @Test func idxTruncatedOrOverlongFilesAreReported() throws {
        let tiny = TinyIDX(count: 4)
        let file = tiny.imagesFile
        expectDatasetError(["img", "truncated", "\(16 + 48) bytes", "has \(file.count - 5) bytes"])
        {
            _ = try IDX.readImages(Array(file.dropLast(5)), path: "img")
        }
        expectDatasetError(["img", "truncated", "10 bytes", "header alone needs 16"]) {
            _ = try IDX.readImages(Array(file.prefix(10)), path: "img")
        }
        expectDatasetError(["img", "too short"]) { _ = try IDX.readImages([0, 0], path: "img") }
        expectDatasetError(["img", "3 bytes more"]) {
            _ = try IDX.readImages(file + [1, 2, 3], path: "img")
        }
        expectDatasetError(["lab", "truncated"]) {
            _ = try IDX.readLabels(Array(tiny.labelsFile.dropLast()), path: "lab", classes: 10)
        }
        // Sizes whose product overflows must be caught before any allocation or read.
        let huge = bigEndian(0x803) + bigEndian(.max) + bigEndian(.max) + bigEndian(.max)
        expectDatasetError(["img", "more than can be addressed"]) {
            _ = try IDX.readImages(huge, path: "img")
        }
        expectDatasetError(["img", "0×4"]) {
            _ = try IDX.readImages(idxImages([], count: 1, rows: 0, columns: 4), path: "img")
        }
    }

    @Test func idxCountMismatchAndBadLabelsAreReported() throws {
        try withTemporaryFolder { folder in
            try write(TinyIDX(count: 4).imagesFile, folder, "train-images-idx3-ubyte")
            try write(idxLabels([1, 2, 3]), folder, "train-labels-idx1-ubyte")
            expectDatasetError([
                "train-images-idx3-ubyte", "4 images", "train-labels-idx1-ubyte has 3 labels",
                "same split",
            ]) {
                _ = try Dataset.load(directory: folder, split: .train)
            }
            try write(idxLabels([1, 2, 12, 3]), folder, "train-labels-idx1-ubyte")
            expectDatasetError(["train-labels-idx1-ubyte", "label 12 of item 2", "10 classes"]) {
                _ = try Dataset.load(directory: folder, split: .train)
            }
        }
    }

    /// Random damage to a valid file must give an error or a data set, never a crash.
    @Test func idxReaderSurvivesRandomDamage() throws {
        let images = TinyIDX(count: 3).imagesFile
        let labels = TinyIDX(count: 3).labelsFile
        let packed = try Gzip.compress(images)
        var generator = SeededGenerator(seed: 7)
        for _ in 0..<2000 {
            for original in [images, labels, packed] {
                var bytes = original
                switch generator.next() % 3 {
                case 0: bytes = Array(bytes.prefix(Int(generator.next() % UInt64(bytes.count + 1))))
                case 1:
                    bytes[Int(generator.next() % UInt64(bytes.count))] = UInt8(
                        truncatingIfNeeded: generator.next())
                default:
                    bytes += (0..<Int(generator.next() % 8)).map { _ in
                        UInt8(truncatingIfNeeded: generator.next())
                    }
                }
                _ = try? IDX.readImages(bytes, path: "f")
                _ = try? IDX.readLabels(bytes, path: "f", classes: 10)
                var cifarImages: [Float] = []
                var cifarLabels: [Int32] = []
                _ = try? CIFAR10.append(
                    bytes, path: "f", images: &cifarImages, labels: &cifarLabels)
                _ = try? Gzip.decompress(bytes, path: "f")
            }
        }
    }

    // MARK: - Missing files

    @Test func missingFolderOrFilesNameWhatWasLookedFor() throws {
        let absent = URL(fileURLWithPath: "/nonexistent/sigprop-data")
        expectDatasetError([
            "/nonexistent/sigprop-data", "does not exist", "apt-get install dataset-fashion-mnist",
            "--data-dir",
        ]) {
            _ = try Dataset.load(directory: absent, split: .train)
        }
        try withTemporaryFolder { folder in
            let message = expectDatasetError([
                folder.path, "train-images-idx3-ubyte[.gz]", "train-labels-idx1-ubyte[.gz]",
                "data_batch_1.bin", "cifar-10-batches-bin", "it is empty",
                "apt-get install dataset-fashion-mnist", "--data-dir",
            ]) {
                _ = try Dataset.load(directory: folder, split: .train)
            }
            #expect(message.hasPrefix("data set \(folder.path): "))
            #expect(Dataset.detectFormat(directory: folder) == nil)

            try write(TinyIDX(count: 2).imagesFile, folder, "train-images-idx3-ubyte.gz")
            expectDatasetError(["not train-labels-idx1-ubyte[.gz]", "--data-dir"]) {
                _ = try Dataset.load(directory: folder, split: .train)
            }
            // The train files are not the test split.
            try write(TinyIDX(count: 2).labelsFile, folder, "train-labels-idx1-ubyte")
            expectDatasetError([
                "t10k-images-idx3-ubyte[.gz]", "test_batch.bin", "it holds train-images",
            ]) {
                _ = try Dataset.load(directory: folder, split: .test)
            }
        }
    }

    /// A data file that is a folder, or a folder that may not be read, says so in plain words
    /// (not "NSCocoaErrorDomain error 256", not "it is empty").
    @Test func dataFileThatIsAFolderSaysSo() throws {
        try withTemporaryFolder { folder in
            try TinyIDX(count: 2).write(to: folder)
            let images = folder.appendingPathComponent("train-images-idx3-ubyte")
            try FileManager.default.removeItem(at: images)
            try FileManager.default.createDirectory(at: images, withIntermediateDirectories: false)
            let message = expectDatasetError([
                images.path, "cannot be read: it is a folder, not a file", "--data-dir",
            ]) {
                _ = try Dataset.load(directory: folder, split: .train)
            }
            #expect(!message.contains("NSCocoaErrorDomain"), "\(message)")
        }
    }

    /// Permission bits do not stop root, so this runs for other users only; the words for
    /// each error number are checked for everyone in `fileSystemErrorsInPlainWords`.
    @Test(.enabled(if: getuid() != 0, "root reads folders whatever their permissions"))
    func unreadableDataFolderSaysPermissionDenied() throws {
        try withTemporaryFolder { folder in
            try TinyIDX(count: 2).write(to: folder)
            chmod(folder.path, 0)
            defer { chmod(folder.path, 0o755) }
            let message = expectDatasetError([folder.path, "permission denied", "--data-dir"]) {
                _ = try Dataset.load(directory: folder, split: .train)
            }
            #expect(!message.contains("empty") && !message.contains("apt-get"), "\(message)")
        }
    }

    @Test func fileSystemErrorsInPlainWords() throws {
        #expect(FileSystemError.reason(EACCES) == "permission denied")
        #expect(FileSystemError.reason(EISDIR) == "it is a folder, not a file")
        #expect(FileSystemError.reason(ENOSPC).contains("the disk is full"))
        #expect(FileSystemError.reason(EROFS) == "the file system is read-only")
        #expect(FileSystemError.code(of: CocoaError(.fileWriteOutOfSpace)) == ENOSPC)
        let wrapped = NSError(
            domain: NSCocoaErrorDomain, code: 512,
            userInfo: [NSUnderlyingErrorKey: NSError(domain: NSPOSIXErrorDomain, code: Int(EROFS))])
        #expect(FileSystemError.code(of: wrapped) == EROFS)
        #expect(throws: FileSystemError(path: "/", code: EISDIR)) {
            _ = try FileSystemError.read("/")
        }
        #expect(throws: FileSystemError(path: "/nonexistent", code: ENOENT)) {
            _ = try FileSystemError.read("/nonexistent")
        }
    }

    // MARK: - CIFAR-10

    /// `count` records whose label is `(first + i) % 10` and whose pixels encode the record.
    private func cifarRecords(_ count: Int, first: Int) -> [UInt8] {
        (0..<count).flatMap { i -> [UInt8] in
            [UInt8((first + i) % 10)]
                + (0..<3072).map { UInt8(truncatingIfNeeded: $0 &+ 13 &* (first + i)) }
        }
    }

    @Test(arguments: [false, true]) func loadsCIFAR10(inSubfolder: Bool) throws {
        try withTemporaryFolder { root in
            let folder = inSubfolder ? root.appendingPathComponent("cifar-10-batches-bin") : root
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            for batch in 1...5 {
                try write(
                    cifarRecords(2, first: 2 * (batch - 1)), folder, "data_batch_\(batch).bin")
            }
            try write(cifarRecords(3, first: 100), folder, "test_batch.bin")

            let train = try Dataset.load(directory: root, split: .train)
            #expect(train.count == 10)
            #expect((train.channels, train.height, train.width, train.classes) == (3, 32, 32, 10))
            #expect(train.format == .cifar10)
            #expect(train.labels == (0..<10).map { Int32($0) })
            let seventh = Array(train.images[(7 * 3072)..<(8 * 3072)])
            expectClose(
                seventh, (0..<3072).map { Float(UInt8(truncatingIfNeeded: $0 &+ 13 &* 7)) / 255 },
                absolute: 0, relative: 0, "image 7")

            let test = try Dataset.load(directory: root, split: .test)
            #expect(test.count == 3)
            #expect(test.labels == [0, 1, 2])
            #expect(Dataset.detectFormat(directory: root) == .cifar10)
        }
    }

    @Test func cifarErrorsNameTheFile() throws {
        try withTemporaryFolder { folder in
            try write(cifarRecords(1, first: 0) + [9], folder, "test_batch.bin")
            expectDatasetError([
                "test_batch.bin", "3074 bytes", "not a multiple of the 3073-byte CIFAR-10 record",
                "binary version",
            ]) {
                _ = try Dataset.load(directory: folder, split: .test)
            }
            var badLabel = cifarRecords(2, first: 0)
            badLabel[3073] = 10
            try write(badLabel, folder, "test_batch.bin")
            expectDatasetError(["test_batch.bin", "label 10 of record 1", "10 classes"]) {
                _ = try Dataset.load(directory: folder, split: .test)
            }
            try write([], folder, "test_batch.bin")
            expectDatasetError(["test_batch.bin", "empty"]) {
                _ = try Dataset.load(directory: folder, split: .test)
            }

            for batch in [1, 2, 4] {
                try write(cifarRecords(1, first: 0), folder, "data_batch_\(batch).bin")
            }
            expectDatasetError([
                folder.path, "missing: data_batch_3.bin, data_batch_5.bin",
                "cifar-10-binary.tar.gz",
            ]) {
                _ = try Dataset.load(directory: folder, split: .train)
            }
        }
    }

    // MARK: - Normalisation

    /// Two pixel values per channel, mean ± std: a set whose statistics are exactly `target`'s.
    static func dataset(withStatisticsOf target: Normalization) throws -> Dataset {
        let images = zip(target.mean, target.std).flatMap { mean, std in [mean - std, mean + std] }
        return try Dataset(
            images: images, labels: [0], channels: target.mean.count, height: 1, width: 2,
            classes: 10, format: .idx)
    }

    /// The images decide, not the folder's name: a set with a published set's statistics gets
    /// its exact values, any other set its own statistics, and the reason says which.
    @Test func normalizationIsRecognisedByContent() throws {
        for (name, values) in Normalization.published {
            let (chosen, source) = Normalization.standard(
                for: try Self.dataset(withStatisticsOf: values))
            #expect(chosen == values, "\(name)")
            #expect(source.contains("published \(name) values"), "\(source)")
        }
        let gray = try Dataset(
            images: [0, 0.5, 1, 0.5], labels: [0], channels: 1, height: 2, width: 2, classes: 10,
            format: .idx)
        let (computed, source) = Normalization.standard(for: gray)
        expectClose(computed.mean, [0.5], "mean")
        expectClose(computed.std, [Float(0.125).squareRoot()], "std")
        #expect(source == "computed from the 1 training images")
        #expect(Normalization.cifar10.mean == [0.4914, 0.4822, 0.4465])
        #expect(Normalization.cifar10.std == [0.2470, 0.2435, 0.2616])
    }

    @Test func normalizationStandardisesEachChannel() throws {
        var generator = SeededGenerator(seed: 3)
        // Channel c holds values around 0.2 + 0.3c with its own spread.
        let images = (0..<(20 * 3 * 16)).map { i -> Float in
            let c = (i / 16) % 3
            return 0.2 + 0.3 * Float(c) + Float(c + 1) * 0.05
                * Float.random(in: -1...1, using: &generator)
        }
        let dataset = try Dataset(
            images: images, labels: Array(repeating: 1, count: 20), channels: 3, height: 4,
            width: 4, classes: 2)
        let normalization = Normalization.compute(from: dataset)
        let normalized = Normalization.compute(from: try normalization.apply(to: dataset))
        expectClose(normalized.mean, [0, 0, 0], absolute: 1e-5, "mean after apply")
        expectClose(normalized.std, [1, 1, 1], absolute: 1e-4, "std after apply")
        #expect(try normalization.apply(to: dataset).labels == dataset.labels)

        // A checkpoint's values for another channel count are refused.
        #expect(throws: SigPropError.self) {
            try Normalization.cifar10.apply(
                to: try Dataset(
                    images: [0], labels: [0], channels: 1, height: 1, width: 1, classes: 1))
        }
        // A constant channel gets std 1 rather than a division by zero.
        let flat = try Dataset(
            images: [0.5, 0.5], labels: [0, 0], channels: 1, height: 1, width: 1, classes: 1)
        #expect(Normalization.compute(from: flat) == Normalization(mean: [0.5], std: [1]))
        // Round-trips through JSON (checkpoints carry it).
        let decoded = try JSONDecoder().decode(
            Normalization.self, from: try JSONEncoder().encode(Normalization.cifar10))
        #expect(decoded == .cifar10)
    }

    @Test func datasetInitChecksShapes() throws {
        #expect(throws: SigPropError.self) {
            try Dataset(
                images: [0, 0, 0], labels: [0], channels: 1, height: 2, width: 2, classes: 10)
        }
        #expect(throws: SigPropError.self) {
            try Dataset(images: [0], labels: [10], channels: 1, height: 1, width: 1, classes: 10)
        }
        #expect(throws: SigPropError.self) {
            try Dataset(images: [], labels: [], channels: 0, height: 1, width: 1, classes: 10)
        }
        let dataset = try Dataset(
            images: (0..<8).map(Float.init), labels: [0, 1, 2, 3], channels: 1, height: 1, width: 2,
            classes: 4)
        let batch = dataset.batch([2, 0])
        #expect(batch.images == [4, 5, 0, 1])
        #expect(batch.labels == [2, 0])
        #expect(dataset.prefix(3).count == 3)
        #expect(dataset.prefix(3).images == [0, 1, 2, 3, 4, 5])
        #expect(dataset.prefix(99).count == 4)
    }

    // MARK: - Batch order

    @Test func batchOrderIsSeededAndDropsThePartialBatch() throws {
        let order = try BatchOrder(count: 103, batchSize: 10, seed: 42)
        let epoch0 = order.batches(epoch: 0)
        #expect(epoch0.count == 10)
        #expect(epoch0.allSatisfy { $0.count == 10 })
        let seen = epoch0.flatMap { $0 }
        #expect(Set(seen).count == seen.count, "an index appears twice")
        #expect(seen.allSatisfy { (0..<103).contains($0) })
        #expect(Set(order.permutation(epoch: 0)) == Set(0..<103))

        #expect(
            try BatchOrder(count: 103, batchSize: 10, seed: 42).batches(epoch: 0) == epoch0,
            "same seed, same order")
        #expect(order.batches(epoch: 1) != epoch0, "a new epoch reshuffles")
        #expect(try BatchOrder(count: 103, batchSize: 10, seed: 43).batches(epoch: 0) != epoch0)
        #expect(seen != Array(0..<100), "not shuffled")
        // Pinned, so a change of the shuffle (which would change every training run) is noticed.
        #expect(
            try BatchOrder(count: 10, batchSize: 4, seed: 1).batches(epoch: 0)
                == BatchOrderPin.seed1Epoch0)

        #expect(throws: SigPropError.self) { try BatchOrder(count: 10, batchSize: 0, seed: 1) }
        #expect(throws: SigPropError.self) { try BatchOrder(count: 10, batchSize: 11, seed: 1) }
        #expect(try BatchOrder(count: 10, batchSize: 10, seed: 1).batches(epoch: 3).count == 1)
    }

    // MARK: - Augmentation

    @Test func augmentationKeepsShapesAndFlipIsItsOwnInverse() throws {
        let (channels, height, width) = (3, 5, 6)
        let original = random(4 * channels * height * width, seed: 11)

        var flipped = original
        var generator = SeededGenerator(seed: 5)
        let flip = Augmentation(horizontalFlip: true)
        flip.apply(
            images: &flipped, channels: channels, height: height, width: width, using: &generator)
        #expect(flipped.count == original.count)
        #expect(flipped != original, "with 4 images and p = 1/2 the seed used flips at least one")
        generator = SeededGenerator(seed: 5)
        flip.apply(
            images: &flipped, channels: channels, height: height, width: width, using: &generator)
        #expect(flipped == original)

        var row: [Float] = [1, 2, 3, 4, 5, 6]
        row.withUnsafeMutableBufferPointer {
            Augmentation.flipHorizontally($0, channels: 1, height: 1, width: 6)
        }
        #expect(row == [6, 5, 4, 3, 2, 1])

        var cropped = original
        Augmentation(randomCropPadding: 2, horizontalFlip: true)
            .apply(
                images: &cropped, channels: channels, height: height, width: width,
                using: &generator)
        #expect(cropped.count == original.count)
        var untouched = original
        Augmentation.none.apply(
            images: &untouched, channels: channels, height: height, width: width, using: &generator)
        #expect(untouched == original)
    }

    @Test func cropShiftsAndPadsWithZero() throws {
        // 1 channel, 3×3: 1...9; shifting by (1, -1) reads the pixel one row down, one left.
        var image: [Float] = [1, 2, 3, 4, 5, 6, 7, 8, 9]
        var scratch = [Float](repeating: 0, count: 9)
        image.withUnsafeMutableBufferPointer {
            Augmentation.shift($0, by: (1, -1), channels: 1, height: 3, width: 3, scratch: &scratch)
        }
        #expect(image == [0, 4, 5, 0, 7, 8, 0, 0, 0])
    }

    // MARK: - The real data set

    @Test(.enabled(if: FileManager.default.fileExists(atPath: Dataset.defaultDirectory)))
    func loadsInstalledFashionMNIST() throws {
        let folder = URL(fileURLWithPath: Dataset.defaultDirectory)
        let start = Date()
        let train = try Dataset.load(directory: folder, split: .train)
        let seconds = Date().timeIntervalSince(start)
        let test = try Dataset.load(directory: folder, split: .test)
        #expect(train.count == 60_000)
        #expect(test.count == 10_000)
        for set in [train, test] {
            #expect((set.channels, set.height, set.width) == (1, 28, 28))
            #expect(set.images.count == set.count * 784)
            #expect(set.labels.allSatisfy { (0..<10).contains($0) })
        }
        #expect(Set(test.labels).count == 10)
        #expect(Normalization.standard(for: train).values == .fashionMNIST)
        // The published statistics are what this training set gives.
        let computed = Normalization.compute(from: train)
        expectClose(computed.mean, [0.2860], absolute: 5e-4, "Fashion-MNIST mean")
        expectClose(computed.std, [0.3530], absolute: 5e-4, "Fashion-MNIST std")
        print("loaded the Fashion-MNIST training set in \(String(format: "%.3f", seconds)) s")
    }
}

/// The order `BatchOrder(count: 10, batchSize: 4, seed: 1)` gives in epoch 0, computed by an
/// independent Python transcription of SplitMix64 + Lemire draws + Fisher–Yates.
private enum BatchOrderPin {
    static let seed1Epoch0: [[Int]] = [[3, 6, 4, 7], [9, 5, 2, 1]]
}
