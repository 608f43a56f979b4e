import Foundation
import Optim
import Testing
@testable import ExampleModel

@Suite struct TrainingSmokeTests {
    /// Plain SGD written out here (p ← p − 0.1·g) on the digits reaches > 90 % test accuracy.
    @Test func sgdLearnsTheDigits() throws {
        let (train, test) = try Dataset.digits().split(testFraction: 0.2, seed: 0)
        let model = try MLP(inputs: 64, hidden: [32], outputs: 10, activation: .relu, seed: 0)
        let batchSize = 32
        var features: [Float] = [], labels: [Int32] = []
        var step = 0
        var epoch = 0
        var firstLoss: Float = 0, lastLoss: Float = 0
        training: while true {
            let order = train.batchOrder(epoch: epoch, seed: 0)
            for start in stride(from: 0, to: order.count - batchSize + 1, by: batchSize) {
                train.gather(rows: order[start..<(start + batchSize)], features: &features, labels: &labels)
                let (loss, _) = try features.withUnsafeBufferPointer {
                    try model.lossAndGradient(features: $0, labels: labels, batchSize: batchSize)
                }
                if step == 0 { firstLoss = loss }
                lastLoss = loss
                for parameter in model.parameters {
                    let gradient = try #require(parameter.gradient)
                    for i in 0..<parameter.count { parameter.values[i] -= 0.1 * gradient[i] }
                }
                step += 1
                if step == 400 { break training }
            }
            epoch += 1
        }
        let (testLoss, accuracy) = try model.evaluate(test)
        print("digits smoke test: test accuracy \(accuracy), loss \(testLoss) after \(step) steps")
        #expect(accuracy > 0.9, "test accuracy \(accuracy), loss \(testLoss) after \(step) steps (first batch loss \(firstLoss), last \(lastLoss))")
        #expect(testLoss < firstLoss)
    }
}
