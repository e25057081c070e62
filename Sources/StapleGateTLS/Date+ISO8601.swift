import Foundation

extension Date {
    /// "2026-12-07T15:41:53Z": the same text as `formatted(.iso8601)` (UTC, whole seconds, the
    /// fraction dropped), made with integer arithmetic. A handshake formats several dates (the
    /// cache-hit verdict's "cached until", the trace's OCSP details and certificate expiry), and
    /// Foundation's format style took microseconds each (a calendar, a time zone, a locale).
    public var iso8601String: String {
        let seconds = Int64(timeIntervalSince1970.rounded(.down))
        var days = seconds / 86_400
        var secondOfDay = seconds % 86_400
        if secondOfDay < 0 {
            secondOfDay += 86_400
            days -= 1
        }
        let (year, month, day) = Self.civil(daysSinceEpoch: days)
        // Before 1600 Foundation counts Julian dates (the Gregorian reform), past 9999 more digits: its own.
        guard (1600...9999).contains(year) else { return formatted(.iso8601) }
        var bytes = [UInt8](repeating: 0, count: 20)
        func put(_ value: Int64, _ width: Int, at offset: Int) {
            var value = value
            for index in stride(from: offset + width - 1, through: offset, by: -1) {
                bytes[index] = UInt8(ascii: "0") + UInt8(value % 10)
                value /= 10
            }
        }
        put(year, 4, at: 0)
        bytes[4] = UInt8(ascii: "-")
        put(month, 2, at: 5)
        bytes[7] = UInt8(ascii: "-")
        put(day, 2, at: 8)
        bytes[10] = UInt8(ascii: "T")
        put(secondOfDay / 3600, 2, at: 11)
        bytes[13] = UInt8(ascii: ":")
        put(secondOfDay / 60 % 60, 2, at: 14)
        bytes[16] = UInt8(ascii: ":")
        put(secondOfDay % 60, 2, at: 17)
        bytes[19] = UInt8(ascii: "Z")
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
    /// `civil_from_days`, in 400-year eras of 146 097 days).
    static func civil(daysSinceEpoch days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let shifted = days + 719_468  // from 0000-03-01, so that leap days end each year
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthFromMarch = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthFromMarch + 2) / 5 + 1
        let month = monthFromMarch < 10 ? monthFromMarch + 3 : monthFromMarch - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}
