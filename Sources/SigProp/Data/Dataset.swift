import Foundation

/// The on-disk formats `Dataset.load` recognises.
public enum DatasetFormat: String, Sendable, Codable, CaseIterable {
    /// MNIST-format IDX files (MNIST, Fashion-MNIST), gzipped or not.
    case idx
    /// The CIFAR-10 binary version.
    case cifar10
}

/// Images and labels held in host memory.
public struct Dataset: Sendable {
    public enum Split: String, Sendable, CaseIterable {
        case train, test
    }

    /// Where `train --data-dir` points by default: Debian's dataset-fashion-mnist package.
    public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"

    /// `count × featureCount` floats, each image C×H×W, raw pixel / 255 in 0...1.
    public let images: [Float]
    public let labels: [Int32]
    public let channels: Int
    public let height: Int
    public let width: Int
    public let classes: Int
    /// The format it was read from; nil for a data set built in memory.
    public let format: DatasetFormat?

    public var count: Int { labels.count }
    public var featureCount: Int { channels * height * width }

    /// Checks that the shapes agree and every label is in `0..<classes`.
    public init(
        images: [Float], labels: [Int32], channels: Int, height: Int, width: Int, classes: Int,
        format: DatasetFormat? = nil
    ) throws {
        guard channels > 0, height > 0, width > 0, classes > 0 else {
            throw SigPropError.shapeMismatch(
                operation: "Dataset",
                detail:
                    "channels \(channels), height \(height), width \(width) and classes "
                    + "\(classes) must all be positive"
            )
        }
        let (perImage, o1) = channels.multipliedReportingOverflow(by: height)
        let (features, o2) = perImage.multipliedReportingOverflow(by: width)
        let (total, o3) = features.multipliedReportingOverflow(by: labels.count)
        guard !o1, !o2, !o3, total == images.count else {
            throw SigPropError.shapeMismatch(
                operation: "Dataset",
                detail:
                    "\(images.count) floats do not hold \(labels.count) images of "
                    + "\(channels)×\(height)×\(width)"
            )
        }
        if let bad = labels.firstIndex(where: { $0 < 0 || Int($0) >= classes }) {
            throw SigPropError.shapeMismatch(
                operation: "Dataset",
                detail: "label \(labels[bad]) of item \(bad) is outside 0..<\(classes)")
        }
        self.init(
            unchecked: images, labels: labels, channels: channels, height: height, width: width,
            classes: classes, format: format)
    }

    /// The images and labels of `indices`, in that order: `indices.count × featureCount` floats.
    /// Indices come from `BatchOrder` and must lie in `0..<count`.
    public func batch(_ indices: [Int]) -> (images: [Float], labels: [Int32]) {
        let features = featureCount
        let batchImages = [Float](unsafeUninitializedCapacity: indices.count * features) {
            target, initialized in
            images.withUnsafeBufferPointer { source in
                for (row, index) in indices.enumerated() {
                    precondition(
                        index >= 0 && index < count,
                        "Dataset.batch: index \(index) is outside 0..<\(count)")
                    let from = source.baseAddress.map { $0 + index * features }
                    let to = target.baseAddress.map { $0 + row * features }
                    if let from, let to { to.update(from: from, count: features) }
                }
            }
            initialized = indices.count * features
        }
        return (batchImages, indices.map { labels[$0] })
    }

    /// The first `n` items (all when `n >= count`): for quick runs on part of a set.
    public func prefix(_ n: Int) -> Dataset {
        let kept = max(0, min(n, count))
        return Dataset(
            unchecked: Array(images[0..<(kept * featureCount)]), labels: Array(labels[0..<kept]),
            like: self)
    }

    /// For transformations of an already checked data set (same shape, new values).
    init(unchecked images: [Float], labels: [Int32], like other: Dataset) {
        self.images = images
        self.labels = labels
        channels = other.channels
        height = other.height
        width = other.width
        classes = other.classes
        format = other.format
    }
}

// MARK: - Loading

extension Dataset {
    /// The fix every "not found" error ends with.
    static let installFix =
        "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) for the "
        + "default \(defaultDirectory), or pass --data-dir with MNIST-format IDX files or "
        + "the CIFAR-10 binary files"

    /// Reads one split from `directory`, recognising the format by the files present:
    /// MNIST-format IDX (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
    /// `t10k-…` for the test split; 10 classes) or CIFAR-10 binary (`data_batch_1.bin` …
    /// `data_batch_5.bin`, `test_batch.bin`, directly in `directory` or in its
    /// `cifar-10-batches-bin` subfolder).
    public static func load(directory: URL, split: Split) throws -> Dataset {
        switch try locate(directory: directory, split: split) {
        case .idx(let imagesURL, let labelsURL):
            return try loadIDX(images: imagesURL, labels: labelsURL)
        case .cifar10(let files):
            return try loadCIFAR10(files)
        }
    }

    /// The format the files in `directory` are in, or nil when neither is complete.
    public static func detectFormat(directory: URL) -> DatasetFormat? {
        switch try? locate(directory: directory, split: .train) {
        case .idx?: return .idx
        case .cifar10?: return .cifar10
        case nil: return nil
        }
    }

    enum Location: Equatable {
        case idx(images: URL, labels: URL)
        case cifar10([URL])
    }

    /// Why `path` cannot be read as a data folder, and the fix, or nil: a folder that may not
    /// be listed would otherwise look empty.
    static func folderProblem(_ path: String) -> (problem: String, fix: String)? {
        let readable = "give --data-dir a folder you may read, or make it readable (chmod a+rx)"
        var info = stat()
        guard stat(path, &info) == 0 else {
            return errno == ENOENT
                ? ("the folder does not exist", installFix)
                : ("the folder cannot be read: \(FileSystemError.reason(errno))", readable)
        }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            return ("this is a file, not a folder", installFix)
        }
        guard access(path, R_OK | X_OK) == 0 else {
            return ("the folder cannot be read: \(FileSystemError.reason(errno))", readable)
        }
        return nil
    }

    static func idxNames(_ split: Split) -> (images: String, labels: String) {
        let prefix = split == .train ? "train" : "t10k"
        return ("\(prefix)-images-idx3-ubyte", "\(prefix)-labels-idx1-ubyte")
    }

    static func locate(directory: URL, split: Split) throws -> Location {
        let fileManager = FileManager.default
        let path = directory.path
        if let (problem, fix) = folderProblem(path) {
            throw SigPropError.dataset(path: path, problem: problem, fix: fix)
        }
        func existing(_ url: URL) -> URL? { fileManager.fileExists(atPath: url.path) ? url : nil }

        // IDX: the plain file wins over the .gz one (no inflating needed).
        let names = idxNames(split)
        func idxFile(_ name: String) -> URL? {
            existing(directory.appendingPathComponent(name))
                ?? existing(directory.appendingPathComponent(name + ".gz"))
        }
        switch (idxFile(names.images), idxFile(names.labels)) {
        case (let images?, let labels?):
            return .idx(images: images, labels: labels)
        case (_?, nil), (nil, _?):
            let missing = idxFile(names.images) == nil ? names.images : names.labels
            throw SigPropError.dataset(
                path: path,
                problem:
                    "it has the \(split.rawValue) "
                    + "\(missing == names.images ? "labels" : "images") but not "
                    + "\(missing)[.gz]",
                fix:
                    "put both the images and the labels file of the \(split.rawValue) split in "
                    + "the folder; or "
                    + installFix)
        case (nil, nil):
            break
        }

        // CIFAR-10, directly in the folder or where the official archive unpacks it.
        let cifarNames = CIFAR10.fileNames(split)
        for folder in [directory, directory.appendingPathComponent(CIFAR10.subfolder)] {
            let urls = cifarNames.map { folder.appendingPathComponent($0) }
            let present = urls.filter { fileManager.fileExists(atPath: $0.path) }
            if present.count == urls.count { return .cifar10(urls) }
            if !present.isEmpty {
                let missing = zip(cifarNames, urls).filter {
                    !fileManager.fileExists(atPath: $0.1.path)
                }.map(\.0)
                throw SigPropError.dataset(
                    path: folder.path,
                    problem: "CIFAR-10 files are missing: \(missing.joined(separator: ", "))",
                    fix:
                        "unpack the whole CIFAR-10 binary archive (cifar-10-binary.tar.gz) there; "
                        + "or "
                        + installFix)
            }
        }

        let contents = ((try? fileManager.contentsOfDirectory(atPath: path)) ?? []).sorted()
        let holds =
            contents.isEmpty
            ? "it is empty"
            : "it holds " + contents.prefix(6).joined(separator: ", ")
                + (contents.count > 6 ? ", … (\(contents.count) entries)" : "")
        throw SigPropError.dataset(
            path: path,
            problem:
                "no \(split.rawValue) files found: looked for \(names.images)[.gz] and "
                + "\(names.labels)[.gz] (MNIST-format IDX) and for "
                + "\(cifarNames.joined(separator: ", ")) (CIFAR-10 binary, also in "
                + "\(CIFAR10.subfolder)/); \(holds)",
            fix: installFix)
    }

    static func loadIDX(images imagesURL: URL, labels labelsURL: URL) throws -> Dataset {
        let imagesPath = imagesURL.path
        let labelsPath = labelsURL.path
        let images = try IDX.readImages(try DataFile.read(imagesURL), path: imagesPath)
        let classes = 10
        let labels = try IDX.readLabels(
            try DataFile.read(labelsURL), path: labelsPath, classes: classes)
        guard images.count == labels.count else {
            throw SigPropError.dataset(
                path: imagesPath,
                problem:
                    "it has \(images.count) images but \(labelsURL.lastPathComponent) has "
                    + "\(labels.count) labels",
                fix: "use the images and labels files of the same split and the same data set")
        }
        guard images.count > 0 else {
            throw SigPropError.dataset(
                path: imagesPath, problem: "it holds no images", fix: "download the file again")
        }
        return Dataset(
            unchecked: images.pixels, labels: labels, channels: 1, height: images.rows,
            width: images.columns,
            classes: classes, format: .idx)
    }

    static func loadCIFAR10(_ files: [URL]) throws -> Dataset {
        var images: [Float] = []
        var labels: [Int32] = []
        for file in files {
            try CIFAR10.append(
                try DataFile.read(file), path: file.path, images: &images, labels: &labels)
        }
        return Dataset(
            unchecked: images, labels: labels, channels: CIFAR10.channels, height: CIFAR10.height,
            width: CIFAR10.width, classes: CIFAR10.classes, format: .cifar10)
    }

    /// For loaders that have already checked shapes and labels.
    init(
        unchecked images: [Float], labels: [Int32], channels: Int, height: Int, width: Int,
        classes: Int,
        format: DatasetFormat?
    ) {
        self.images = images
        self.labels = labels
        self.channels = channels
        self.height = height
        self.width = width
        self.classes = classes
        self.format = format
    }
}
