import CFuzzDriver
import StapleGateFuzzHarness

/// Chosen in main before libFuzzer starts; read only afterwards.
nonisolated(unsafe) var fuzzTarget: FuzzTarget?

/// libFuzzer's callback, also under the name its archive's own `main` expects (which the
/// linker pulls in, though this binary's main is the one that runs).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzTarget?.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

/// Hands the command line to libFuzzer's driver with `fuzzOneInput` as the callback.
func runFuzzer() -> CInt {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    return LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput)
}
