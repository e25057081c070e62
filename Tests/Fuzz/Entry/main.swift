#if canImport(Glibc)
import Glibc
#endif
import StapleGateFuzzHarness

// The fuzz binary (`make fuzz`): one for every target, so the sanitized world is linked once.
// STAPLEGATE_FUZZ_TARGET names the target; the rest of the command line is libFuzzer's.
let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
guard let name = getenv("STAPLEGATE_FUZZ_TARGET").map({ String(cString: $0) }) else {
    fputs("staplegate-fuzz: set STAPLEGATE_FUZZ_TARGET to one of: \(names)\n", stderr)
    exit(2)
}
guard let chosen = FuzzTarget(rawValue: name) else {
    fputs("staplegate-fuzz: STAPLEGATE_FUZZ_TARGET=\(name) is no target; the targets are: \(names)\n", stderr)
    exit(2)
}
fuzzTarget = chosen
exit(runFuzzer())
