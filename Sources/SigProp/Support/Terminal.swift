import Foundation

/// The terminal the command-line tools write to.
package enum Terminal {
    /// Columns of the terminal on `descriptor` (TIOCGWINSZ), else $COLUMNS, else 80. Asked
    /// at every in-place update: the window may be resized while a run goes on.
    public static func columns(
        of descriptor: Int32 = STDOUT_FILENO,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> Int {
        var size = winsize()
        if ioctl(descriptor, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 {
            return Int(size.ws_col)
        }
        if let text = environment["COLUMNS"], let columns = Int(text), columns > 0 {
            return columns
        }
        return 80
    }
}
