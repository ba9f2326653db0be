import Foundation

/// What a run trains on besides the model and the training options: the data folder, the
/// samples used and the normalisation. A checkpoint stores it so a resumed run continues on
/// the same samples, normalised the same way, and its batch positions mean the same batches.
public struct DataSettings: Sendable, Codable, Equatable {
    /// The data folder, absolute.
    public var directory: String
    /// Only the first `limit` training samples are used; nil for all of them.
    public var limit: Int?
    public var normalization: Normalization

    public init(directory: String, limit: Int?, normalization: Normalization) {
        self.directory = URL(fileURLWithPath: directory).standardizedFileURL.path
        self.limit = limit
        self.normalization = normalization
    }
}
