import ArgumentParser
import Foundation
import StapleGateTLS

struct TicketKeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ticket-keys",
        abstract: "Make and rotate the session ticket key file (tls.session_ticket_keys) a fleet of gateways shares.",
        discussion: """
            The file holds one base64 key per line (80 bytes: 16-byte name, 32-byte HMAC secret, \
            32-byte AES key); the first key encrypts new tickets, every key decrypts. Give every \
            gateway behind one load balancer the same file, so a device resumes its TLS session \
            on whichever gateway it reaches, across reloads and restarts.
            """,
        subcommands: [TicketKeysGenerateCommand.self, TicketKeysRotateCommand.self]
    )
}

struct TicketKeysGenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Write a new key file with one fresh random key, mode 0600.",
        discussion: """
            Refuses to replace an existing file unless --force: replacing the keys makes every \
            ticket issued with them cost its device a full handshake. Make the file readable by \
            the gateway's user (chown staplegate FILE), copy it to every gateway, then point \
            tls.session_ticket_keys at it and reload.
            """
    )

    @Argument(help: "The key file to write.")
    var file: String

    @Flag(name: .long, help: "Replace the file if it exists (keeping its owner and group).")
    var force = false

    func run() throws {
        let key = SessionTicketKey.random()
        do {
            try SessionTicketKeyFile.create(at: file, keys: [key], replacing: force)
        } catch {
            throw CommandFailure(message: error.description)
        }
        print("wrote \(file): 1 key (\(key.shortName)), mode 0600")
    }
}

struct TicketKeysRotateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate",
        abstract: "Put a fresh key first in the key file (it encrypts new tickets from the next reload) and drop the oldest.",
        discussion: """
            The earlier keys stay below it, decrypting tickets already issued, up to --keep keys \
            in all. Copy the file to every gateway and reload each (staplegate reload, or \
            systemctl reload staplegate). Until every gateway has reloaded, a ticket made under the \
            new key on one costs a full handshake on another that has not: nothing worse.
            """
    )

    @Argument(help: "The key file to rotate (written in place, keeping its owner, group and mode).")
    var file: String

    @Option(name: .long, help: "The most keys to keep, the new one included (2 to \(SessionTicketKeyRing.maximumKeys)).")
    var keep = 3

    func validate() throws {
        guard (2...SessionTicketKeyRing.maximumKeys).contains(keep) else {
            throw ValidationError("--keep must be from 2 to \(SessionTicketKeyRing.maximumKeys): the new key and at least the one tickets are made with now")
        }
    }

    func run() throws {
        let rotation: SessionTicketKeyFile.Rotation
        do {
            rotation = try SessionTicketKeyFile.rotate(at: file, keep: keep)
        } catch {
            throw CommandFailure(message: error.description)
        }
        var text = "rotated \(file): new key \(rotation.added.shortName) first"
        text += ", \(rotation.kept.count) older key(s) kept for decryption"
        if !rotation.dropped.isEmpty {
            text += ", dropped \(rotation.dropped.map(\.shortName).joined(separator: ", "))"
        }
        print(text + "; copy it to every gateway and reload them")
    }
}
