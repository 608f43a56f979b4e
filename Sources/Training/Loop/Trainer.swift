import ExampleModel
import Foundation
import Optim
import OptimDistributed
import Safetensors

/// Where a run stands, for progress displays.
public struct TrainingProgress: Sendable {
    /// The epoch under way, counted from 0.
    public var epoch: Int
    /// The run's number of epochs.
    public var epochs: Int
    /// The global step just taken, counted from 1.
    public var step: Int
    /// The run's total number of steps.
    public var totalSteps: Int
    /// Mean training loss and accuracy over the steps since the last record.
    public var loss: Double
    /// The mean training accuracy (the fraction of correct predictions) over the same steps.
    public var accuracy: Double
    /// Test accuracy at the end of the latest finished epoch.
    public var testAccuracy: Double?
    /// Training steps per second so far in this run (evaluation excluded).
    public var stepsPerSecond: Double
    /// The first group's learning rate for the step just taken.
    public var learningRate: Double
}

/// One logged step of a run (a line of `metrics.jsonl`).
public struct TrainingRecord: Sendable {
    /// The global step, counted from 1.
    public var step: Int
    /// The epoch, counted from 0.
    public var epoch: Int
    /// Seconds of training since the run started (evaluation excluded).
    public var seconds: Double
    /// The first group's learning rate for the step.
    public var learningRate: Double
    /// The mean training loss over the steps since the previous record.
    public var loss: Double
    /// The mean training accuracy (the fraction correct) over the steps since the previous record.
    public var accuracy: Double
    /// Set on the last step of an epoch.
    public var testLoss: Double?
    /// The held-out accuracy, on the last step of an epoch.
    public var testAccuracy: Double?
    /// The global gradient norm before clipping, when clipping.
    public var gradientNorm: Double?
    /// Optimizer metrics (`l2_norm/param/layers.0.weight`, …) on the steps that collect them.
    public var metrics: [String: Double]?
}

/// The outcome of a run.
public struct TrainingResult: Sendable {
    /// The configuration the run trained with.
    public var configuration: TrainingConfiguration
    /// Every logged step, in order.
    public var records: [TrainingRecord]
    /// The final held-out accuracy: the test rows, or the validation batches of a text.
    public var testAccuracy: Double
    /// The final held-out mean loss.
    public var testLoss: Double
    /// Mean training loss over the last logged interval.
    public var finalTrainLoss: Double
    /// Steps taken in this run (after a resume: since the resume).
    public var steps: Int
    /// The global step the run started from (0, or the resumed checkpoint's).
    public var startStep: Int
    /// Training seconds (evaluation excluded) and wall-clock seconds.
    public var seconds: Double
    /// Wall-clock seconds of the run, evaluation included.
    public var wallSeconds: Double
    /// Training steps per second (evaluation excluded); 0 for a run without training time.
    public var stepsPerSecond: Double { seconds > 0 ? Double(steps) / seconds : 0 }
    /// The model's number of parameters (elements).
    public var parameterCount: Int
    /// Optimizer state bytes per model parameter (Lookahead's slow weights included).
    public var stateBytesPerParameter: Double
    /// The run stopped early because `shouldStop` said so (a signal), before `until` or the end.
    public var interrupted = false
}

/// Where one step of a data-parallel run spent its time, on this rank: the per-step timeline a
/// run folder keeps (`timeline.jsonl`).
public struct StepTiming: Sendable, Equatable {
    /// The global step (1-based, as the records).
    public var step: Int
    /// Forward and backward pass, buckets started and progressed during it included.
    public var computeSeconds: Double
    /// The gradient communication's span: from the first bucket's start to the last one's
    /// completion (overlapped), or the blocking reduction's time.
    public var communicationSeconds: Double
    /// The part of it the step waited for after backward: not hidden behind computation.
    public var exposedSeconds: Double
    /// Clipping, the optimizer step and the schedule.
    public var optimizerSeconds: Double
    /// Whether gradients were reduced during backward.
    public var overlapped: Bool

    /// Communication hidden behind backward: the span less what was waited for.
    public var hiddenSeconds: Double { max(0, communicationSeconds - exposedSeconds) }
}

/// The data a ``Trainer`` trains on: rows of features with labels (the MLP's task), or a text for
/// next-character prediction (the GPT's).
public enum TrainingData: Sendable {
    /// Rows of features with labels: the training set, and the test set evaluated after every epoch.
    case rows(train: Dataset, test: Dataset)
    /// A text for next-character prediction, with its training and validation splits.
    case text(TextCorpus)

    /// Whether it is a text (validated) rather than rows (tested).
    var isText: Bool { if case .text = self { return true } else { return false } }
}

/// Trains an example model (any `TrainableModel`: the MLP on rows of features, the
/// GPT on a text) with any optimizer of the registry: mini-batches (for rows, shuffled in an order
/// that is a pure function of seed and epoch; for a text, windows drawn from seed and step), a
/// learning-rate schedule with warm-up, optional global-norm clipping, biases and other 1-D
/// parameters without weight decay, the held-out data evaluated after every epoch (for a text, an
/// "epoch" is ``TrainingConfiguration/evaluateEvery`` steps). Deterministic for a given seed and
/// thread count.
///
/// Data parallel when given a `Communicator`: every rank builds the same model, rank 0's weights
/// are broadcast, each rank takes its share of every global batch, gradients are summed so every
/// rank steps on the global batch's mean gradient (the same parameters as one process with that
/// batch, within float rounding), and optionally each rank keeps only its slice of the optimizer
/// state (`ShardedOptimizer`, ZeRO stage 1).
public final class Trainer {
    /// The run's configuration.
    public let configuration: TrainingConfiguration
    /// The data trained and evaluated on.
    public let data: TrainingData
    /// The model being trained.
    public let model: any TrainableModel
    /// The optimizer stepping the model's parameters (a `ShardedOptimizer` when the state is sharded).
    public let optimizer: any Optimizer
    /// Whether the optimizer evaluates the batch itself, through a closure (L-BFGS).
    let optimizerNeedsClosure: Bool
    /// The learning-rate schedule applied to the optimizer, its step count the run's global step.
    public let scheduler: LearningRateScheduler
    /// The threads the model and the optimizer run on.
    public let threadPool: ThreadPool
    /// Steps in one epoch: batches in one pass over the rows, or for a text
    /// ``TrainingConfiguration/evaluateEvery``.
    public let stepsPerEpoch: Int
    /// Epochs of the run: ``TrainingConfiguration/epochs`` passes over rows, or for a text
    /// ``TrainingConfiguration/iterations`` / ``TrainingConfiguration/evaluateEvery`` intervals.
    public let epochs: Int
    /// Steps in the whole run: ``stepsPerEpoch`` times ``epochs``.
    public var totalSteps: Int { stepsPerEpoch * epochs }
    /// The most steps a run may take (2^31 - 1): far beyond any run that finishes, and small
    /// enough that every count, schedule and record of the run stays exact.
    public static let maximumSteps = Int(Int32.max)
    /// The global step reached (steps taken, across resumes).
    public var step: Int { scheduler.stepCount }
    /// The ranks of a data-parallel run, or nil.
    public let communicator: (any Communicator)?
    private let dataParallel: DataParallel?
    /// Whether a data-parallel run reduces each bucket of gradients while backward goes on
    /// (`DataParallel.beginGradientReduction(scale:averaging:)`, DDP's overlap) rather than all after it;
    /// both give the same gradients. On by default.
    public var overlapsCommunication = true
    /// Where each step of a data-parallel run spent its time (empty in one process).
    public private(set) var timeline: [StepTiming] = []
    /// More metadata for every checkpoint (the CLI's run options, for a resume to restore).
    public var checkpointMetadata: [String: String] = [:]
    private var batch = ModelBatch()

    /// Builds the MLP (weights from `configuration.seed`) for rows of features, and the optimizer.
    ///
    /// - Parameters:
    ///   - configuration: the run's settings: model, optimizer, schedule, batches.
    ///   - train: the training set.
    ///   - test: the test set.
    ///   - communicator: the ranks of a data-parallel run (collective: every rank builds its
    ///     trainer with the same configuration).
    ///   - shardState: keep only this rank's slice of the optimizer state (ZeRO-1).
    ///   - bucketBytes: the gradient buckets of a data-parallel run (`DataParallel.bucketBytes`).
    ///   - shardGradients: with `shardState`, shard the gradients too (ZeRO-2).
    public convenience init(configuration: TrainingConfiguration, train: Dataset, test: Dataset, communicator: (any Communicator)? = nil,
                            shardState: Bool = false, bucketBytes: Int = DataParallel.defaultBucketBytes, shardGradients: Bool = false) throws {
        try configuration.validate()
        guard train.count > 0 else { throw TrainingError.dataMismatch("the training set is empty") }
        guard test.count > 0 else {
            throw TrainingError.dataMismatch("the test set is empty: \(train.count) example(s) leave none to test on; use more data or a larger --test-fraction")
        }
        guard test.featureCount == train.featureCount else {
            throw TrainingError.dataMismatch("the test set has \(test.featureCount) features, the training set \(train.featureCount)")
        }
        let world = communicator?.size ?? 1
        guard configuration.batchSize >= world else {
            throw TrainingError.invalidOption("--batch-size \(configuration.batchSize) is smaller than the \(world) ranks sharing each batch")
        }
        guard configuration.batchSize <= train.count else {
            throw TrainingError.invalidOption("--batch-size \(configuration.batchSize) is larger than the \(train.count) training examples; use at most \(train.count)")
        }
        // Steps without overflow: the batch size may be anything up to Int.max.
        let stepsPerEpoch = train.count / configuration.batchSize + (train.count % configuration.batchSize == 0 ? 0 : 1)
        let (totalSteps, overflow) = stepsPerEpoch.multipliedReportingOverflow(by: configuration.epochs)
        guard !overflow, totalSteps <= Self.maximumSteps else {
            throw TrainingError.invalidOption("--epochs \(configuration.epochs) of \(stepsPerEpoch) step(s) make more than the \(Self.maximumSteps) steps a run may take")
        }
        guard configuration.warmupSteps <= totalSteps else {
            throw TrainingError.invalidOption("--warmup \(configuration.warmupSteps) is longer than the run's \(totalSteps) steps")
        }
        try Self.checkMemory(configuration, train: train, test: test, totalSteps: totalSteps)
        let threadPool = ThreadPool(threadCount: configuration.threads)
        let model = try MLP(inputs: train.featureCount, hidden: configuration.hidden, outputs: max(train.classCount, test.classCount),
                            activation: configuration.activation, seed: configuration.seed, pool: threadPool)
        try self.init(configuration: configuration, model: model, data: .rows(train: train, test: test), threadPool: threadPool,
                      stepsPerEpoch: stepsPerEpoch, epochs: configuration.epochs,
                      communicator: communicator, shardState: shardState, bucketBytes: bucketBytes, shardGradients: shardGradients)
    }

    /// Builds the GPT of the configuration's shape (weights from `configuration.seed`) for
    /// next-character prediction on `corpus`, and the optimizer.
    ///
    /// - Parameters:
    ///   - configuration: the run's settings: model shape, optimizer, schedule, batches.
    ///   - corpus: the text.
    ///   - communicator: the ranks of a data-parallel run, each taking its share of the
    ///     sequences of every global batch (collective).
    ///   - shardState: keep only this rank's slice of the optimizer state (ZeRO-1).
    ///   - bucketBytes: the gradient buckets of a data-parallel run (`DataParallel.bucketBytes`).
    ///   - shardGradients: with `shardState`, shard the gradients too (ZeRO-2).
    public convenience init(configuration: TrainingConfiguration, corpus: TextCorpus, communicator: (any Communicator)? = nil,
                            shardState: Bool = false, bucketBytes: Int = DataParallel.defaultBucketBytes, shardGradients: Bool = false) throws {
        try configuration.validate()
        guard configuration.iterations % configuration.evaluateEvery == 0 else {
            throw TrainingError.invalidOption("--iters (\(configuration.iterations)) must be a multiple of --eval-every (\(configuration.evaluateEvery))")
        }
        try corpus.checkContext(configuration.context)
        guard configuration.warmupSteps <= configuration.iterations else {
            throw TrainingError.invalidOption("--warmup \(configuration.warmupSteps) is longer than the run's \(configuration.iterations) steps")
        }
        let threadPool = ThreadPool(threadCount: configuration.threads)
        let model = try GPT(GPTConfiguration(vocabularySize: corpus.vocabularySize, contextLength: configuration.context, layers: configuration.layers,
                                             heads: configuration.heads, embedding: configuration.embedding),
                            seed: configuration.seed, pool: threadPool)
        try self.init(configuration: configuration, model: model, data: .text(corpus), threadPool: threadPool,
                      stepsPerEpoch: configuration.evaluateEvery, epochs: configuration.iterations / configuration.evaluateEvery,
                      communicator: communicator, shardState: shardState, bucketBytes: bucketBytes, shardGradients: shardGradients)
    }

    private init(configuration: TrainingConfiguration, model: any TrainableModel, data: TrainingData, threadPool: ThreadPool,
                 stepsPerEpoch: Int, epochs: Int, communicator: (any Communicator)?, shardState: Bool, bucketBytes: Int,
                 shardGradients: Bool) throws {
        self.configuration = configuration
        self.data = data
        self.communicator = communicator
        self.threadPool = threadPool
        self.model = model
        let optimizerConfiguration = try configuration.optimizerConfiguration()
        // With master weights the optimizer keeps the float32 initial weights whole (below).
        let masterWeights = configuration.parameterDType == .bfloat16 && optimizerConfiguration.hyperparameters["master_weights"] == .bool(true)
        let initialWeights = masterWeights ? model.parameters.map(\.valueArray) : []
        if configuration.parameterDType != .float32 {
            for parameter in model.parameters { parameter.convert(to: configuration.parameterDType) }
        }
        optimizerNeedsClosure = try OptimizerRegistry.info(named: optimizerConfiguration.name).requiresClosure
        if optimizerNeedsClosure, configuration.clipNorm != nil {
            throw TrainingError.invalidOption("--clip does not apply to \(optimizerConfiguration.name): it evaluates its own gradients through the loss closure")
        }
        // The weights keep the optimizer's weight decay; biases get none.
        let groups = try ParameterGrouping.weightDecayGroups(model.parameters, for: optimizerConfiguration)
        // Data parallel: check every rank holds the same parameters and take rank 0's values,
        // before the optimizer is built (Lookahead copies the weights it starts from).
        guard !shardGradients || shardState else { throw TrainingError.invalidOption("--shard-gradients (ZeRO-2) needs --shard-state") }
        // Under ZeRO-2, DataParallel only checks and broadcasts (through a small buffer).
        dataParallel = try communicator.map {
            try DataParallel(model.parameters, communicator: $0, bucketBytes: shardGradients ? min(bucketBytes, DataParallel.firstBucketBytes) : bucketBytes)
        }
        if let communicator, shardState {
            optimizer = try ShardedOptimizer(optimizerConfiguration, groups: groups, communicator: communicator, bucketBytes: bucketBytes,
                                             threadPool: threadPool, stage: shardGradients ? .two : .one)
        } else {
            guard !shardState else { throw TrainingError.invalidOption("--shard-state needs --distributed") }
            optimizer = try OptimizerRegistry.makeOptimizer(optimizerConfiguration, groups: groups, threadPool: threadPool)
            for (parameter, values) in zip(model.parameters, initialWeights) { try optimizer.setMasterWeights(values, of: parameter) }
        }
        // Backward reports each layer's gradients as it finishes them, for the reduction to start.
        if let sharded = optimizer as? ShardedOptimizer, sharded.stage == .two {
            model.gradientReadyHandler = { [unowned sharded, unowned model] in sharded.gradientsReady(model.parameters[$0]) }
        } else if let dataParallel {
            model.gradientReadyHandler = { [unowned dataParallel] in dataParallel.gradientsReady($0) }
        }
        let world = communicator?.size ?? 1
        guard configuration.batchSize >= world else {
            throw TrainingError.invalidOption("--batch-size \(configuration.batchSize) is smaller than the \(world) ranks sharing each batch")
        }
        self.stepsPerEpoch = stepsPerEpoch
        self.epochs = epochs
        scheduler = try LearningRateScheduler(optimizer, schedule: configuration.learningRateSchedule(totalSteps: stepsPerEpoch * epochs))
    }

    /// The rows of global batch `batch` (of the epoch's `order`) that this rank trains on.
    func rows(batch: Int, order: [Int]) -> ArraySlice<Int> {
        let start = batch * configuration.batchSize, end = min(start + configuration.batchSize, order.count)
        let world = communicator?.size ?? 1, rank = communicator?.rank ?? 0
        let count = end - start
        return order[(start + count * rank / world)..<(start + count * (rank + 1) / world)]
    }

    /// One optimizer step on global step `step` (for rows, batch `step % stepsPerEpoch` of the
    /// epoch's `order`): this rank's loss sum, correct count and prediction count, and the gradient
    /// norm when clipping.
    func trainStep(step: Int, order: [Int], collectMetrics: Bool) throws -> (loss: Double, correct: Int, count: Int, norm: Double?, metrics: OptimizerMetrics?) {
        // The batch's share of the global batch, for a data-parallel run over rows.
        var share: Float = 1
        switch data {
        case let .rows(train, _):
            let batchIndex = step % stepsPerEpoch
            let rows = rows(batch: batchIndex, order: order)
            gather(train, rows: rows)
            let globalCount = min(configuration.batchSize, order.count - batchIndex * configuration.batchSize)
            share = Float(rows.count) / Float(globalCount)
        case let .text(corpus):
            fillTextBatch(corpus, .train, index: step)
            share = Float(batch.size) / Float(configuration.batchSize)
        }
        // The forward and backward pass over the batch: once, or as often as a closure-driven
        // optimizer (L-BFGS) asks; the records keep the first evaluation, as torch's step returns it.
        var first: BatchOutcome?
        let weight = share
        let overlap = overlapsCommunication
        let zeroTwo = (optimizer as? ShardedOptimizer).flatMap { $0.stage == .two ? $0 : nil }
        var timing = StepTiming(step: step + 1, computeSeconds: 0, communicationSeconds: 0, exposedSeconds: 0, optimizerSeconds: 0,
                                overlapped: overlap)
        let evaluate = { [self] () throws -> Float in
            let computeStart = ProcessInfo.processInfo.systemUptime
            // The model averages over this rank's rows; each gradient is weighted by their share
            // of the global batch, then summed over the ranks: every rank ends with the gradient
            // of the global batch's mean loss. Overlapped, the buckets are weighted and reduced
            // as backward finishes them.
            if overlap {
                if let zeroTwo { try zeroTwo.beginGradientReduction(scale: weight) } else { dataParallel?.beginGradientReduction(scale: weight) }
            }
            let outcome = try model.lossAndGradient(batch)
            timing.computeSeconds += ProcessInfo.processInfo.systemUptime - computeStart
            let loss = outcome.lossSum / Double(max(outcome.count, 1))
            if communicator == nil, !loss.isFinite {
                throw TrainingError.diverged(step: step + 1, message: "the training loss is \(loss.isNaN ? "NaN" : "\(loss)") at step \(step + 1) (epoch \(step / stepsPerEpoch + 1)): training diverged")
            }
            if let zeroTwo {
                // ZeRO-2: each rank keeps the reduced shard of every gradient.
                let reductionStart = ProcessInfo.processInfo.systemUptime
                if overlap {
                    let reduction = try zeroTwo.finishGradientReduction()
                    timing.communicationSeconds += reduction.communicationSeconds
                    timing.exposedSeconds += reduction.exposedSeconds
                } else {
                    try zeroTwo.reduceGradients(scale: weight)
                    let seconds = ProcessInfo.processInfo.systemUptime - reductionStart
                    timing.communicationSeconds += seconds
                    timing.exposedSeconds += seconds
                }
            } else if let dataParallel {
                if overlap {
                    let reduction = try dataParallel.finishGradientReduction()
                    timing.communicationSeconds += reduction.communicationSeconds
                    timing.exposedSeconds += reduction.exposedSeconds
                } else {
                    let reductionStart = ProcessInfo.processInfo.systemUptime
                    for parameter in model.parameters where weight != 1 {
                        guard let gradient = parameter.gradient else { continue }
                        for index in gradient.indices { gradient[index] *= weight }
                    }
                    try dataParallel.sumGradients()
                    let seconds = ProcessInfo.processInfo.systemUptime - reductionStart
                    timing.communicationSeconds += seconds
                    timing.exposedSeconds += seconds
                }
            }
            if first == nil { first = outcome }
            return Float(loss)
        }
        defer { if dataParallel != nil { timeline.append(timing) } }
        if optimizerNeedsClosure {
            try optimizer.step(closure: evaluate)
            try scheduler.step()
            return (first!.lossSum, first!.correct, first!.count, nil, nil)
        }
        _ = try evaluate()
        let outcome = first!
        var norm: Double?
        let optimizerStart = ProcessInfo.processInfo.systemUptime
        if let clip = configuration.clipNorm { norm = try optimizer.clipGradientNorm(maxNorm: clip, threadPool: threadPool) }
        let metrics = try optimizer.step(collectingMetrics: collectMetrics)
        try scheduler.step()
        timing.optimizerSeconds = ProcessInfo.processInfo.systemUptime - optimizerStart
        return (outcome.lossSum, outcome.correct, outcome.count, norm, metrics)
    }

    /// `rows` of a data set into the batch. (Its arrays are moved out and back, without copying:
    /// two `inout` accesses to one stored property would overlap.)
    private func gather(_ dataset: Dataset, rows: some Collection<Int>) {
        var features: [Float] = [], labels: [Int32] = []
        swap(&features, &batch.features)
        swap(&labels, &batch.targets)
        dataset.gather(rows: rows, features: &features, labels: &labels)
        swap(&features, &batch.features)
        swap(&labels, &batch.targets)
        batch.size = rows.count
    }

    /// Batch `index` of a split of the text: `batchSize` windows of `context` tokens.
    private func fillTextBatch(_ corpus: TextCorpus, _ split: TextCorpus.Split, index: Int) {
        let count = configuration.batchSize * configuration.context
        var inputs: [Int32] = [], targets: [Int32] = []
        swap(&inputs, &batch.tokens)
        swap(&targets, &batch.targets)
        if inputs.count != count || targets.count != count {
            inputs = [Int32](repeating: 0, count: count)
            targets = [Int32](repeating: 0, count: count)
        }
        inputs.withUnsafeMutableBufferPointer { inputs in
            targets.withUnsafeMutableBufferPointer { targets in
                corpus.fillBatch(split, index: index, seed: configuration.seed, batchSize: configuration.batchSize, context: configuration.context,
                                 inputs: inputs, targets: targets)
            }
        }
        batch.size = configuration.batchSize
        if split == .train, let communicator, communicator.size > 1 {
            // This rank's sequences of the global batch.
            let rows = configuration.batchSize, world = communicator.size, rank = communicator.rank
            let lower = rows * rank / world, upper = rows * (rank + 1) / world, length = configuration.context
            inputs = Array(inputs[(lower * length)..<(upper * length)])
            targets = Array(targets[(lower * length)..<(upper * length)])
            batch.size = upper - lower
        }
        swap(&inputs, &batch.tokens)
        swap(&targets, &batch.targets)
    }

    /// The mean loss and the accuracy on the held-out data: the test rows, or for a text
    /// ``TrainingConfiguration/evaluationBatches`` validation batches (the same ones every time).
    /// The optimizer is put in eval mode for it and back in train mode after (schedule-free
    /// evaluates at the average x; a no-op for the others).
    public func evaluate() throws -> (loss: Double, accuracy: Double) {
        try optimizer.eval()
        let result = try evaluateHere()
        try optimizer.train()
        return result
    }

    private func evaluateHere() throws -> (loss: Double, accuracy: Double) {
        var total = BatchOutcome(lossSum: 0, correct: 0, count: 0)
        func add(_ outcome: BatchOutcome) {
            total.lossSum += outcome.lossSum
            total.correct += outcome.correct
            total.count += outcome.count
        }
        switch data {
        case let .rows(_, test):
            var start = 0
            while start < test.count {
                let end = min(start + 256, test.count)
                gather(test, rows: start..<end)
                add(try model.evaluate(batch))
                start = end
            }
        case let .text(corpus):
            for index in 0..<configuration.evaluationBatches {
                fillTextBatch(corpus, .validation, index: index)
                add(try model.evaluate(batch))
            }
        }
        guard total.count > 0 else { return (.nan, .nan) }
        return (total.lossSum / Double(total.count), Double(total.correct) / Double(total.count))
    }

    /// Trains to the configured number of epochs (from where a resume left off), or up to global
    /// step `until`, calling `progress` on every record and `record` with each logged step.
    ///
    /// `shouldStop` is asked before every step (a data-parallel run agrees on the answer across
    /// ranks); when it says so the run ends there, marked ``TrainingResult/interrupted``.
    /// `epochEnded` is called after each epoch's test evaluation, with the global step.
    ///
    /// - Throws: ``TrainingError/diverged(step:message:)`` as soon as a loss is not finite (before
    ///   the optimizer steps on it, in a single process), so nothing non-finite reaches
    ///   `epochEnded` or a checkpoint.
    public func run(until: Int? = nil, progress: (TrainingProgress) -> Void = { _ in },
                    record: (TrainingRecord) -> Void = { _ in }, shouldStop: () -> Bool = { false },
                    epochEnded: (Int) throws -> Void = { _ in }) throws -> TrainingResult {
        let lastStep = min(until ?? totalSteps, totalSteps)
        let startStep = step
        let wallStart = ProcessInfo.processInfo.systemUptime
        var trainingSeconds = 0.0
        var records: [TrainingRecord] = []
        var sums = (loss: 0.0, correct: 0.0, count: 0.0), lastLoss = Double.nan, lastAccuracy = Double.nan
        var lastTest: (loss: Double, accuracy: Double)?
        var norm: Double?
        var interrupted = false
        func stopRequested() throws -> Bool {
            guard let communicator else { return shouldStop() }
            var flag = [shouldStop() ? 1.0 : 0.0]
            try flag.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0) }
            return flag[0] > 0
        }
        training: while step < lastStep {
            let epoch = step / stepsPerEpoch
            let order: [Int]
            if case let .rows(train, _) = data { order = train.batchOrder(epoch: epoch, seed: configuration.seed) } else { order = [] }
            while step < min((epoch + 1) * stepsPerEpoch, lastStep) {
                if try stopRequested() {
                    interrupted = true
                    break training
                }
                let learningRate = try optimizer.learningRate(group: 0)
                let collect = configuration.metricsEvery > 0 && (step + 1) % configuration.metricsEvery == 0
                let started = ProcessInfo.processInfo.systemUptime
                let result = try trainStep(step: step, order: order, collectMetrics: collect)
                trainingSeconds += ProcessInfo.processInfo.systemUptime - started
                sums.loss += result.loss
                sums.correct += Double(result.correct)
                sums.count += Double(result.count)
                norm = result.norm ?? norm
                let endOfEpoch = step % stepsPerEpoch == 0
                guard step % configuration.logEvery == 0 || endOfEpoch || result.metrics != nil else { continue }
                var totals = [sums.loss, sums.correct, sums.count]
                if let communicator { try totals.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0) } }
                guard totals[0].isFinite else {
                    throw TrainingError.diverged(step: step, message: "the training loss is \(totals[0].isNaN ? "NaN" : "\(totals[0])") at step \(step) (epoch \(epoch + 1)): training diverged")
                }
                lastLoss = totals[0] / max(totals[2], 1)
                lastAccuracy = totals[1] / max(totals[2], 1)
                sums = (0, 0, 0)
                if endOfEpoch {
                    lastTest = try evaluate()
                    guard lastTest!.loss.isFinite else {
                        throw TrainingError.diverged(step: step, message: "the \(data.isText ? "validation" : "test") loss is \(lastTest!.loss.isNaN ? "NaN" : "\(lastTest!.loss)") after step \(step) (epoch \(epoch + 1)): training diverged")
                    }
                }
                let entry = TrainingRecord(
                    step: step, epoch: epoch, seconds: trainingSeconds, learningRate: learningRate, loss: lastLoss, accuracy: lastAccuracy,
                    testLoss: endOfEpoch ? lastTest?.loss : nil, testAccuracy: endOfEpoch ? lastTest?.accuracy : nil,
                    gradientNorm: norm, metrics: result.metrics?.values)
                records.append(entry)
                record(entry)
                // The epoch's checkpoint before its progress line: a line shown is a line saved.
                if endOfEpoch { try epochEnded(step) }
                progress(TrainingProgress(epoch: epoch, epochs: epochs, step: step, totalSteps: totalSteps, loss: lastLoss,
                                          accuracy: lastAccuracy, testAccuracy: lastTest?.accuracy,
                                          stepsPerSecond: trainingSeconds > 0 ? Double(step - startStep) / trainingSeconds : 0,
                                          learningRate: learningRate))
            }
        }
        let final = try lastTest ?? evaluate()
        let parameterCount = model.parameters.reduce(0) { $0 + $1.count }
        return TrainingResult(
            configuration: configuration, records: records, testAccuracy: final.accuracy, testLoss: final.loss, finalTrainLoss: lastLoss,
            steps: step - startStep, startStep: startStep, seconds: trainingSeconds,
            wallSeconds: ProcessInfo.processInfo.systemUptime - wallStart, parameterCount: parameterCount,
            stateBytesPerParameter: Double(Self.stateBytes(optimizer.snapshot())) / Double(max(parameterCount, 1)), interrupted: interrupted)
    }

    /// Refuses a model whose parameters, gradients, optimizer state (up to four buffers per
    /// parameter, Lookahead's slow weights included) and activations would not fit in this
    /// machine's memory, before any of it is allocated.
    ///
    /// The records a run keeps for its result and charts (one per logged step, with the optimizer
    /// metrics on the steps that collect them) are counted too: a very long run logged often is
    /// refused rather than run out of memory hours in.
    static func checkMemory(_ configuration: TrainingConfiguration, train: Dataset, test: Dataset, totalSteps: Int) throws {
        let sizes = [train.featureCount] + configuration.hidden + [max(train.classCount, test.classCount)]
        var parameters = 0.0
        for (fanIn, fanOut) in zip(sizes, sizes.dropFirst()) { parameters += Double(fanIn) * Double(fanOut) + Double(fanOut) }
        let rows = Double(max(min(configuration.batchSize, train.count), min(256, test.count)))
        let activations = rows * Double(sizes.reduce(0, +)) * 3
        let bytes = (parameters * 6 + activations) * 4
        let available = Double(ProcessInfo.processInfo.physicalMemory)
        // About 256 bytes a record, and 16 metrics of ~128 bytes per parameter tensor collected.
        let tensors = Double(2 * (configuration.hidden.count + 1))
        let recordBytes = Double(totalSteps) / Double(configuration.logEvery) * 256
            + (configuration.metricsEvery > 0 ? Double(totalSteps) / Double(configuration.metricsEvery) * tensors * 16 * 128 : 0)
        guard recordBytes < available / 2 else {
            throw TrainingError.invalidOption("\(totalSteps) steps logged every \(configuration.logEvery) (metrics every \(configuration.metricsEvery)) would keep about \(formatBytes(recordBytes)) of records in memory; this machine has \(formatBytes(available)): use fewer --epochs or a larger --log-every / --metrics-every")
        }
        guard bytes < available else {
            let layers = sizes.map(String.init).joined(separator: "-")
            throw TrainingError.invalidOption("an MLP \(layers) (\(String(format: "%.3g", parameters)) parameters) needs about \(formatBytes(bytes)) for its weights, gradients, optimizer state and activations; this machine has \(formatBytes(available))")
        }
    }

    /// The GPT's shape as saved in a checkpoint: layers,heads,embedding,context.
    private var gptShape: String { [configuration.layers, configuration.heads, configuration.embedding, configuration.context].map(String.init).joined(separator: ",") }

    /// Bytes of every state buffer of a snapshot, wrapped optimizers included.
    static func stateBytes(_ snapshot: OptimizerSnapshot) -> Int {
        snapshot.parameters.values.reduce(0) { total, state in
            total + state.buffers.values.reduce(0) { $0 + $1.count * 4 }
                + state.quantizedBuffers.values.reduce(0) { $0 + $1.codes.count + $1.absmax.count * 4 }
                + state.bfloat16Buffers.values.reduce(0) { $0 + $1.count * 2 }
                + state.parameterBuffers.values.reduce(0) { $0 + $1.count * 2 }
        }
            + (snapshot.base.map(stateBytes) ?? 0)
    }

    /// Whether ``saveCheckpoint(to:)`` writes a sharded checkpoint (`ShardedCheckpoint`: a
    /// folder where each rank writes its part of the state) rather than one file; needs sharded
    /// state.
    public var shardedCheckpoints = false

    /// Saves model, optimizer and schedule atomically, with the run's shape in the metadata. In a
    /// data-parallel run it is collective (call it on every rank) and rank 0 writes the file; a
    /// sharded run's file holds the full state, loadable by sharded and unsharded runs alike. With
    /// ``shardedCheckpoints``, `url` is a folder and each rank writes its own part into it.
    public func saveCheckpoint(to url: URL) throws {
        var metadata = checkpointMetadata
        metadata["training/step"] = String(step)
        switch data {
        case let .rows(train, _):
            metadata["training/features"] = String(train.featureCount)
            metadata["training/hidden"] = configuration.hidden.map(String.init).joined(separator: ",")
        case .text:
            metadata["training/task"] = configuration.task.rawValue
            metadata["training/gpt"] = gptShape
        }
        do {
            if shardedCheckpoints {
                guard let sharded = optimizer as? ShardedOptimizer else {
                    throw TrainingError.invalidOption("sharded checkpoints need sharded optimizer state (--distributed --shard-state)")
                }
                try sharded.saveShardedCheckpoint(to: url, scheduler: scheduler, metadata: metadata)
            } else if let sharded = optimizer as? ShardedOptimizer {
                try sharded.saveCheckpoint(to: url, scheduler: scheduler, metadata: metadata)
            } else if communicator?.isRoot ?? true {
                try Checkpoint.save(optimizer, scheduler: scheduler, to: url, metadata: metadata)
            }
        } catch let error as SafetensorsError {
            throw TrainingError.file("cannot save the checkpoint: \(error)")
        }
    }

    /// Loads a checkpoint saved by ``saveCheckpoint(to:)`` (by a run with the same model shape
    /// and optimizer); the run then continues from its step. Refused loads change nothing. `url`
    /// may be a sharded checkpoint's folder, saved on any number of ranks: a sharded run reads
    /// its own parts of it, an unsharded one the whole state.
    public func resume(from url: URL) throws {
        let sharded = ShardedCheckpoint.exists(at: url)
        let metadata = sharded ? try ShardedCheckpoint.metadata(in: url) : try SafetensorsFile(contentsOf: url).metadata
        switch data {
        case let .rows(train, _):
            if let features = metadata["training/features"], features != String(train.featureCount) {
                throw TrainingError.dataMismatch("the checkpoint's model takes \(features) features, the data has \(train.featureCount)")
            }
            if let hidden = metadata["training/hidden"], hidden != configuration.hidden.map(String.init).joined(separator: ",") {
                throw TrainingError.resume("the checkpoint's hidden layers are \(hidden), not \(configuration.hidden.map(String.init).joined(separator: ",")); pass --hidden \(hidden)")
            }
        case .text:
            if metadata["training/task"] != configuration.task.rawValue || metadata["training/gpt"] != gptShape {
                throw TrainingError.resume("the checkpoint is not of a \(configuration.task.rawValue) GPT with layers,heads,embedding,context \(gptShape)")
            }
        }
        if let saved = metadata["scheduler_step"].flatMap({ Int($0) }), saved > totalSteps {
            throw TrainingError.resume("the checkpoint is at step \(saved), past the \(totalSteps) steps of \(epochs) epoch(s)")
        }
        if sharded, let shardedOptimizer = optimizer as? ShardedOptimizer {
            try shardedOptimizer.loadShardedCheckpoint(from: url, scheduler: scheduler)
        } else if sharded {
            try Checkpoint.load(shardedFrom: url, into: optimizer, scheduler: scheduler)
        } else {
            try Checkpoint.load(from: url, into: optimizer, scheduler: scheduler)
        }
    }
}
