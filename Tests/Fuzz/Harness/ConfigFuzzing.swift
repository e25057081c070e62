import StapleGateConfig

enum ConfigFuzzing {
    /// Any text as the configuration file: it loads or fails with a `ConfigError` that names a
    /// place in the file; never a crash. Files it names (certificates, keys) need not exist: a
    /// missing one is one more error to report.
    static func load(_ bytes: UnsafeRawBufferPointer) {
        let text = String(decoding: bytes, as: UTF8.self)
        do {
            _ = try ConfigLoader.load(yaml: text, path: "fuzz.yaml")
        } catch {
            invariant(!error.description.isEmpty, "a configuration error without words")
        }
    }
}
