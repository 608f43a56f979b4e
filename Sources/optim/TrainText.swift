import ArgumentParser
import ExampleModel
import Foundation
import Optim
import Training

/// The options of `optim train --task austen`: the GPT's shape, the run's length, the sample.
struct TextTaskOptions: ParsableArguments {
    @Option(help: "GPT blocks.") var layers = 4
    @Option(help: "Attention heads (divides --embedding).") var heads = 4
    @Option(help: "Embedding width.") var embedding = 128
    @Option(help: "Context length (characters).") var context = 64
    @Option(name: .customLong("iters"), help: "Training steps.") var iterations = 2000
    @Option(name: .customLong("eval-every"), help: "Steps between validation losses (divides --iters).") var evaluateEvery = 250
    @Option(name: .customLong("eval-batches"), help: "Validation batches per evaluation (the same ones each time; nanoGPT's CPU recipe: 20).") var evaluationBatches = 20
    @Option(name: .customLong("min-lr"), help: "The cosine schedule's final learning rate.") var minimumLearningRate = 1e-4
    @Option(name: .customLong("sample-length"), help: "Characters of the sample generated at the end.") var sampleLength = 500
    @Option(help: "Text the sample starts from (characters of the novels only).") var prompt = "\n"
}

extension TextTaskOptions {
    /// The austen task's configuration: nanoGPT's CPU recipe (lr 1e-3, weight decay 0.1 where the
    /// optimizer takes one, betas 0.9/0.99 for the Adam family, 100 warm-up steps, clipping at 1)
    /// under `hyperparameters` and the command's options.
    func configuration(options: TrainingOptions, settings: [String: String], optimizer: String, base: String,
                       hyperparameters: HyperparameterDictionary) throws -> TrainingConfiguration {
        var configuration = try options.configuration(settings)
        configuration.task = .austen
        configuration.batchSize = options.batchSize ?? 12
        configuration.warmupSteps = options.warmup ?? min(100, iterations)  // nanoGPT's 100, within a shorter run
        configuration.clipNorm = options.clip ?? 1
        configuration.layers = layers
        configuration.heads = heads
        configuration.embedding = embedding
        configuration.context = context
        configuration.iterations = iterations
        configuration.evaluateEvery = evaluateEvery
        configuration.evaluationBatches = evaluationBatches
        configuration.epochs = max(1, iterations / max(evaluateEvery, 1))
        configuration.optimizer = optimizer
        configuration.baseOptimizer = base
        var recipe: HyperparameterDictionary = ["lr": .number(1e-3)]
        if try OptimizerRegistry.info(named: optimizer).defaults["weight_decay"] != nil { recipe["weight_decay"] = .number(0.1) }
        if ["adamw", "adam", "decoupled_adamw", "adopt"].contains(configuration.optimizer) { recipe["betas"] = .numbers([0.9, 0.99]) }
        configuration.hyperparameters = recipe.merging(hyperparameters) { $1 }
        guard case let .number(lr)? = try configuration.optimizerConfiguration().hyperparameters["lr"] ?? configuration.hyperparameters["lr"], lr > 0 else {
            throw TrainingError.invalidOption("--task austen needs a learning rate (--lr)")
        }
        let minimum = minimumLearningRate
        guard minimum >= 0, minimum <= lr else { throw TrainingError.invalidOption("--min-lr must be between 0 and --lr (\(lr)), got \(minimum)") }
        configuration.finalLearningRateFactor = minimum / lr
        try configuration.validate()
        return configuration
    }
}

extension Train {
    /// `optim train --task austen`: nanoGPT's CPU recipe for a character model on Jane Austen —
    /// 4 layers, 4 heads, 128 wide, context 64, batch 12, 2,000 steps, AdamW (lr 1e-3, betas
    /// 0.9/0.99, weight decay 0.1 on matrices), 100 warm-up steps then cosine to 1e-4, clipping at
    /// 1, no dropout — with the validation loss every --eval-every steps, and a sample at the end.
    func trainText(communicator: (any Communicator)?) throws {
        let isRoot = communicator?.isRoot ?? true
        func say(_ text: String) { if isRoot { sayOnStandardOutput(text) } }
        guard !shardState || communicator != nil else { throw TrainingError.invalidOption("--shard-state needs --distributed") }
        guard !shardedCheckpoint || shardState else {
            throw TrainingError.invalidOption("--sharded-checkpoint needs --distributed --shard-state (each rank writes the part of the state it keeps)")
        }
        guard options.data == nil, options.labels == nil else {
            throw TrainingError.invalidOption("--task austen trains on the bundled novels; --data and --labels are for --task digits")
        }
        let settings = try RunSettings.resolve(given: options.given(), hyperparameters: [:], saved: nil).settings
        var configuration = try textOptions.configuration(options: options, settings: settings, optimizer: optimizerOptions.optimizer ?? "adamw",
                                                          base: optimizerOptions.base ?? "adamw", hyperparameters: try optimizerOptions.hyperparameters())
        if let communicator, settings["threads"] == nil {
            // Ranks sharing a machine share its cores.
            let local = ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap { Int($0) } ?? communicator.size
            configuration.threads = max(1, ProcessInfo.processInfo.activeProcessorCount / max(local, 1))
        }
        let minimum = textOptions.minimumLearningRate

        let corpus = try TextCorpus.austen()
        let prompt = try corpus.encode(textOptions.prompt)
        guard !prompt.isEmpty else { throw TrainingError.invalidOption("--prompt must hold at least one character") }
        let trainer = try Trainer(configuration: configuration, corpus: corpus, communicator: communicator, shardState: shardState,
                                  bucketBytes: try bucketBytes(), shardGradients: shardGradients)
        trainer.overlapsCommunication = !noOverlap
        trainer.shardedCheckpoints = shardedCheckpoint
        guard let model = trainer.model as? GPT else { throw TrainingError.invalidOption("the austen task's model is not a GPT") }
        if let resume { try trainer.resume(from: URL(fileURLWithPath: resume)) }
        if let stopAfterEpoch, stopAfterEpoch < 1 || stopAfterEpoch > trainer.epochs {
            throw TrainingError.invalidOption("--stop-after-epoch must be between 1 and \(trainer.epochs) (--iters / --eval-every), got \(stopAfterEpoch)")
        }
        // Rank 0 claims the folder and alone writes to it.
        var outPath = out ?? RunFolder.defaultURL().path
        let folder = isRoot ? try RunFolder(URL(fileURLWithPath: outPath)) : nil
        if let communicator { outPath = try communicator.broadcast(folder?.url.path ?? "", from: 0) }
        let checkpoint = URL(fileURLWithPath: outPath).appendingPathComponent(shardedCheckpoint ? RunFolder.shardedCheckpointName : "checkpoint.safetensors")
        let progress = ProgressReporter(style: !isRoot ? .silent : plain ? .lines : nil)
        let parameters = model.parameters.reduce(0) { $0 + $1.count }
        say("training a \(model.architecture) (\(parameters) parameters) on Jane Austen's novels: \(corpus.validationStart) training / \(corpus.tokens.count - corpus.validationStart) validation characters")
        say("optimizer \(configuration.optimizer) \(CompareReport.describe(try configuration.optimizerConfiguration())), warm-up \(configuration.warmupSteps), cosine to \(minimum), clip \(configuration.clipNorm.map { String($0) } ?? "none"), \(configuration.iterations) steps of \(configuration.batchSize) × \(configuration.context) characters, validation every \(configuration.evaluateEvery) steps, \(configuration.threads) thread(s)")
        var extra = ["data": "austen"]
        if let communicator {
            say("data parallel over \(communicator.size) ranks (\(configuration.threads) thread(s) each)\(shardGradients ? ", optimizer state and gradients sharded (ZeRO-2)" : shardState ? ", optimizer state sharded (ZeRO-1)" : ""); each global batch of \(configuration.batchSize) sequences split between them; gradients reduced \(noOverlap ? "after backward" : "bucket by bucket during backward")")
            extra["ranks"] = String(communicator.size)
            extra["sharded_state"] = String(shardState)
            extra["sharded_gradients"] = String(shardGradients)
            extra["overlap"] = String(!noOverlap)
        }
        if trainer.step > 0 { say("resumed at step \(trainer.step) from \(resume ?? "")") }
        Interrupts.install()
        let result = try trainer.run(recordingTo: folder, checkpoint: checkpoint, until: stopAfterEpoch.map { $0 * trainer.stepsPerEpoch },
                                     extra: extra, shouldStop: { Interrupts.signal != 0 }) { record in
            progress.report(record, milestone: record.step % trainer.stepsPerEpoch == 0)
        }
        progress.finish()
        guard let folder else { return }
        if communicator != nil { say("gradient communication " + TimelineSummary(trainer.timeline).description + " (timeline.jsonl, timeline.svg)") }
        for record in result.records where record.testLoss != nil {
            say(String(format: "step %5d: train loss %.4f, val loss %.4f", record.step, record.loss, record.testLoss!))
        }
        let sample = textOptions.prompt + corpus.decode(try model.generate(prompt: prompt, count: textOptions.sampleLength, seed: configuration.seed))
        let sampleURL = folder.url.appendingPathComponent("sample.txt")
        do {
            try Data(sample.utf8).write(to: sampleURL, options: .atomic)
        } catch {
            throw TrainingError.invalidOption("cannot write \(sampleURL.path): \(error.localizedDescription)")
        }
        say("sample (\(textOptions.sampleLength) characters, temperature 1):\n\(sample)\n")
        say(String(format: "val loss %.4f (next-character accuracy %.1f%%), final train loss %.4f, %d steps in %.1f s (%.0f tokens/s), %.1f s in all",
                   result.testLoss, result.testAccuracy * 100, result.finalTrainLoss, result.steps, result.seconds,
                   Double(result.steps * configuration.batchSize * configuration.context) / max(result.seconds, 1e-9), result.wallSeconds))
        say("wrote \(folder.url.path)/: summary.json metrics.jsonl loss.svg accuracy.svg \(checkpoint.lastPathComponent)\(shardedCheckpoint ? "/" : "") sample.txt\(communicator != nil ? " timeline.jsonl timeline.svg" : "")")
    }
}
