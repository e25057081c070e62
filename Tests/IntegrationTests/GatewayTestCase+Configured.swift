import Foundation
import StapleGateConfig
import TestSupport
import XCTest

extension GatewayTestCase {
    /// A gateway with a configuration the test built itself (typically
    /// `GatewayUnderTest.configuration(...)`, then modified), stopped at the end of the test; its
    /// log and the broker's are printed when the test failed.
    func startConfiguredGateway(_ configuration: GatewayConfiguration) async throws -> GatewayUnderTest {
        let gateway = try await GatewayUnderTest.start(configuration)
        addTeardownBlock { [weak self] in
            if let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 {
                print("--- gateway log ---\n\(gateway.log.text)\n--- broker log ---\n\(self?.broker.log ?? "")")
            }
            try await gateway.stop()
        }
        return gateway
    }
}
