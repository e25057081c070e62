import Foundation
import StapleGateTLS

/// One OCSP question asked and its answer verified: the fetch / verify core that stapling and
/// device checks share (as nginx's stapling and client OCSP share `ngx_ssl_ocsp_*`).
struct OCSPQuery: Sendable {
    let client: OCSPHTTPClient
    let fetch: OCSPFetchConfiguration
    let clockSkew: Duration
    let nonce: Bool

    struct Answer: Sendable {
        let response: VerifiedOCSPResponse
        /// Connect to last byte, as `OCSPHTTPClient` measured it.
        let latency: Duration
        /// The URL actually fetched.
        let url: String
    }

    /// Why no verified answer was had, in the words the log and the trace use.
    enum Failure: Error, Sendable, CustomStringConvertible {
        case request(OCSPError)
        case fetch(OCSPFetchError)
        case rejected(OCSPRejection)

        var description: String {
            switch self {
            case let .request(error): "cannot build the OCSP request: \(error)"
            case let .fetch(error): "\(error)"
            case let .rejected(rejection): "\(rejection)"
            }
        }
    }

    func ask(about certificate: X509Certificate, issuer: X509Certificate, responderURL: String,
             now: @Sendable () -> Date = Date.init) async -> Result<Answer, Failure> {
        let certID: CertID
        do { certID = try CertID(certificate: certificate, issuer: issuer) } catch { return .failure(.request(error)) }
        return await ask(about: certID, issuer: issuer, responderURL: responderURL, now: now)
    }

    /// The same question by CertID: for a certificate already checked against `issuer` (a
    /// verified chain), or known only by its cache entry.
    func ask(about certID: CertID, issuer: X509Certificate, responderURL: String,
             now: @Sendable () -> Date = Date.init) async -> Result<Answer, Failure> {
        let request: OCSPRequest
        do { request = try OCSPRequest(certID: certID, issuer: issuer, includeNonce: nonce) } catch {
            return .failure(.request(error))
        }
        let getURL = fetch.method == .get ? request.getURL(responderURL: responderURL) : nil
        let result: OCSPFetchResult
        do {
            result = try await client.fetch(responderURL: responderURL, requestDER: request.der, getURL: getURL,
                                            configuration: fetch)
        } catch {
            return .failure(.fetch(error))
        }
        let policy = OCSPVerificationPolicy(issuer: issuer, clockSkew: clockSkew)
        switch policy.verify(der: result.body, for: request.certID, nonce: request.nonce, now: now()) {
        case let .success(response): return .success(Answer(response: response, latency: result.latency, url: result.url))
        case let .failure(rejection): return .failure(.rejected(rejection))
        }
    }
}
