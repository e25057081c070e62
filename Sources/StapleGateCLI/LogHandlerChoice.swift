import Logging
import StapleGateConfig
import StapleGateServer

/// The log handler `logging.format` asks for, writing to standard error from `level` up.
func makeLogHandler(label: String, format: LogFormat, level: Logger.Level) -> any LogHandler {
    switch format {
    case .text:
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    case .json:
        var handler = JSONLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
}
