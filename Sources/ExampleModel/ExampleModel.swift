// The ExampleModel module: see Dataset, MLP and MatMul.
