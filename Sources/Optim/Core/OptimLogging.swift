import Logging

/// Where the library logs (advice such as the large-weight-decay warning of the decoupled
/// optimizers). It is task-local: bind another logger around a piece of code to redirect it.
///
/// ```swift
/// try OptimLogging.$logger.withValue(myLogger) { try DecoupledLionW(params, hyperparameters: .init(weightDecay: 0.1)) }
/// ```
public enum OptimLogging {
    /// The logger in force for the current task; by default labelled `swift-optim`.
    @TaskLocal public static var logger = Logger(label: "swift-optim")
}
