import Foundation

extension PostgresServer {
    /// Creates the login role `user` with `password` and makes the server ask it for that
    /// password over TCP (scram-sha-256, ahead of the trust lines), as a production server does.
    public func addPasswordUser(_ user: String, password: String, database: String) async throws {
        try await psql("CREATE ROLE \(user) LOGIN PASSWORD '\(password)'; GRANT ALL ON SCHEMA public TO \(user);", database: database)
        let hba = dataDirectory + "/pg_hba.conf"
        let current = try String(contentsOfFile: hba, encoding: .utf8)
        try ("host all \(user) 127.0.0.0/8 scram-sha-256\n" + current).write(toFile: hba, atomically: false, encoding: .utf8)
        try chown(hba)
        try await psql("SELECT pg_reload_conf()", database: database)
    }
}
