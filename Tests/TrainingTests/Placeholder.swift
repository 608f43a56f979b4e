import Testing
import Training
