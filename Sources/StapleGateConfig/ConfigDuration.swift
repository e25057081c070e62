/// Durations as operators write them in the config file: "500ms", "10s", "5m", "1h", "1d", or a
/// bare whole number of seconds.
public enum ConfigDuration {
    /// Shown whenever a duration is refused, so the fix is in the message.
    static let acceptedForms = #"a whole number followed by ms, s, m, h or d (e.g. "500ms", "10s", "5m", "1h", "1d"), or a bare number of seconds"#

    /// Longest suffix first, so "ms" is not read as "m" followed by garbage.
    private static let units: [(suffix: String, milliseconds: Int64)] = [
        ("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000),
    ]

    /// nil when `text` is not one of the accepted forms (or too large to represent).
    public static func parse(_ text: String) -> Duration? {
        let (digits, scale) = split(text)
        // Only ASCII digits: no sign, no fraction, no spaces, so "1.5h" and "-5s" are refused
        // rather than guessed at.
        guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
              let count = Int64(digits) else { return nil }
        let (milliseconds, overflow) = count.multipliedReportingOverflow(by: scale)
        guard !overflow else { return nil }
        return .milliseconds(milliseconds)
    }

    private static func split(_ text: String) -> (digits: Substring, milliseconds: Int64) {
        for unit in units where text.hasSuffix(unit.suffix) {
            return (text.dropLast(unit.suffix.count), unit.milliseconds)
        }
        return (Substring(text), 1_000)
    }
}
