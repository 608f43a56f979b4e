import Testing
@testable import ExampleModel
