import Foundation

/// How an operator names the device certificates a command is about: by serial number (any
/// issuer), or by device identity (every certificate the device has used).
public enum CertificateSelector: Sendable, Hashable, CustomStringConvertible {
    /// Upper-case hex without leading zero bytes, as `CertID.serialHex` spells it.
    case serial(String)
    /// The identity as `admission.identity` takes it (the CN by default).
    case identity(String)

    /// A serial as operators copy it: `openssl x509 -serial` ("0AAB", or "serial=0AAB"),
    /// `openssl x509 -text` ("0a:ab"), with or without leading zeros, in either case. Nil (and
    /// `serialProblem` says why) for anything else.
    public static func serial(parsing text: String) -> CertificateSelector? {
        guard let hex = normalizedSerial(text) else { return nil }
        return .serial(hex)
    }

    /// Why `text` is not a serial number, or nil when it is one.
    public static func serialProblem(_ text: String) -> String? {
        normalizedSerial(text) == nil ? "a serial number must be hexadecimal (e.g. 5B1F03A2 or 5b:1f:03:a2), not \"\(text)\"" : nil
    }

    /// `text` as `CertID.serialHex` spells a serial, or nil when it is not one.
    public static func normalizedSerial(_ text: String) -> String? {
        var digits = Substring(text.trimmingCharacters(in: .whitespaces))
        if digits.lowercased().hasPrefix("serial=") { digits = digits.dropFirst("serial=".count) }
        if digits.lowercased().hasPrefix("0x") { digits = digits.dropFirst(2) }
        let hex = digits.filter { $0 != ":" }.uppercased()
        guard !hex.isEmpty, hex.count <= 80, hex.allSatisfy(\.isHexDigit) else { return nil }
        // Two digits per byte with the leading zero bytes dropped: "0AAB" for 0x0aab, "00" for 0.
        let significant = hex.drop { $0 == "0" }
        if significant.isEmpty { return "00" }
        return significant.count.isMultiple(of: 2) ? String(significant) : "0" + significant
    }

    /// Whether a connected device's certificate (its `X509Certificate.serialHex`) and identity
    /// are what this selects.
    public func matches(serialHex: String, identity: String) -> Bool {
        switch self {
        case let .serial(hex): return Self.normalizedSerial(serialHex) == hex
        case let .identity(wanted): return identity == wanted
        }
    }

    /// Whether `status` is about a certificate this selects.
    public func matches(_ status: CachedOCSPStatus) -> Bool {
        switch self {
        case let .serial(hex): return status.certID.serialHex == hex
        case let .identity(identity): return status.identity == identity
        }
    }

    /// "serial 0AAB" or "device dev-1", for messages.
    public var description: String {
        switch self {
        case let .serial(hex): "serial \(hex)"
        case let .identity(identity): "device \(identity)"
        }
    }
}
