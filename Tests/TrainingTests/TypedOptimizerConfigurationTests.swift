import Optim
import Testing
@testable import Training

/// The Trainer takes a typed optimizer as well as the registry's name and dictionary.
@Suite struct TypedOptimizerConfigurationTests {
    @Test func typedHyperparametersSetTheNameAndEveryValue() throws {
        let hyperparameters = AdamW.Hyperparameters(learningRate: 3e-3, betas: .init(0.9, 0.95), weightDecay: 0.05)
        var typed = quickConfiguration()
        typed.setOptimizer(AdamW.self, hyperparameters: hyperparameters)
        #expect(typed.optimizer == "adamw")
        #expect(typed.hyperparameters == hyperparameters.dictionary)
        // Every value is written, so the example tasks' suggestion (lr 2e-3 for AdamW) does not apply.
        #expect(try typed.optimizerConfiguration() == OptimizerConfiguration(AdamW.self, hyperparameters: hyperparameters))

        var byName = quickConfiguration()
        byName.optimizer = "adamw"
        byName.hyperparameters = ["lr": .number(3e-3), "betas": .numbers([0.9, 0.95]), "weight_decay": .number(0.05),
                                  "eps": .number(1e-8), "amsgrad": .bool(false), "maximize": .bool(false)]
        #expect(typed == byName)

        let data = try digits()
        let trainer = try Trainer(configuration: typed, train: data.train, test: data.test)
        #expect(trainer.optimizer.name == "adamw")
        // The learning rate is the schedule's from the first step on; it starts from ours.
        func withoutLearningRate(_ dictionary: HyperparameterDictionary) -> HyperparameterDictionary { dictionary.filter { $0.key != "lr" } }
        #expect(try trainer.optimizer.initialLearningRate(group: 0) == 3e-3)
        #expect(try withoutLearningRate(trainer.optimizer.hyperparameters(group: 0)) == withoutLearningRate(hyperparameters.dictionary))
        // The biases' group: the same but no weight decay.
        var exempt = hyperparameters
        exempt.weightDecay = 0
        #expect(try trainer.optimizer.initialLearningRate(group: 1) == 3e-3)
        #expect(try withoutLearningRate(trainer.optimizer.hyperparameters(group: 1)) == withoutLearningRate(exempt.dictionary))
    }
}
