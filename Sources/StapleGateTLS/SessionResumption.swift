import COpenSSL

/// How a device resumes its TLS session on a `ServerContext`, chosen once at start from
/// `tls.session_ticket_keys`:
/// - `SessionTicketKeyRing` (a key file, or the fleet's keys): the session travels sealed in
///   the ticket, so any gateway holding the keys resumes it;
/// - `ServerSessionCache` (no key file): the session stays in this process and the ticket only
///   names it. Cheaper: OpenSSL 3.0 re-encodes and re-parses the device certificate to seal
///   every ticket and parses it again to open one.
/// Either way no session resumes without the device certificate gate's leave, when there is a
/// gate (`HandshakeVerdictSlot.mayResume`).
public protocol SessionResumption: AnyObject, Sendable {
    /// Makes `context` resume this way. The context keeps an unretained pointer: its
    /// `ServerContext` holds `self` for as long as it holds the `SSL_CTX`.
    func install(on context: OpaquePointer)
    /// With a device certificate gate: makes every resumption on `context` ask it first.
    func gate(on context: OpaquePointer)
    /// For the log: where sessions resume, and whether they outlive a reload or a restart.
    var summary: String { get }
}
