// Every optimizer of the library, in registry (`optim list`) order: the one line a new optimizer
// adds outside its own file, its C reference and its fixtures (CONTRIBUTING.md).
//
// This file is compiled three times. In Optim the list gives `OptimizerRegistry.all`. Each kernel
// module compiles it too (Sources/OptimKernelsAVX2/OptimizerList.swift and
// Sources/OptimKernelsAVX512/OptimizerList.swift are symlinks to it), where the same list compiles
// the loops of every rule given with `kernelsOf:` for that module's instruction set. The walk, the
// visitors and the per-rule compilation are in this one file because a generic function of
// another file is not specialised outside whole-module optimisation (debug builds), and the
// kernel modules must specialise every rule even there.

#if OPTIM_KERNELS_AVX2 || OPTIM_KERNELS_AVX512
import Optim
#endif

/// Something that walks ``visitOptimizerList(_:)``. The list passes types, not entries, so that
/// the kernel modules never copy an ``OptimizerInfo`` (code of Optim's types compiled into a
/// kernel module: tools/check-kernel-symbols.sh).
protocol OptimizerListVisitor {
    /// An optimizer whose rule's loops the kernel modules compile for their instruction set (an
    /// elementwise ``UpdateRule`` or a ``TensorPassRule``).
    mutating func add<Rule: UpdateRule & RegistryEntry>(kernelsOf rule: Rule.Type)
    /// An optimizer that runs on Optim's own code (whole-tensor rules, Lookahead, L-BFGS) or
    /// registers its kernels by other means (Prodigy: `KernelTable.setProdigyKernels`).
    mutating func add<Entry: RegistryEntry>(_ entry: Entry.Type)
}

/// The list itself.
@inline(__always)
func visitOptimizerList<Visitor: OptimizerListVisitor>(_ list: inout Visitor) {
    list.add(kernelsOf: SGDRule.self)
    list.add(kernelsOf: AdamRule.self)
    list.add(kernelsOf: AdamWRule.self)
    list.add(kernelsOf: DecoupledAdamWRule.self)
    list.add(kernelsOf: LionRule.self)
    list.add(kernelsOf: DecoupledLionWRule.self)
    list.add(kernelsOf: ADOPTRule.self)
    list.add(Lookahead.self)
    list.add(kernelsOf: AdagradRule.self)
    list.add(kernelsOf: RMSpropRule.self)
    list.add(kernelsOf: AdamaxRule.self)
    list.add(kernelsOf: RAdamRule.self)
    list.add(kernelsOf: NAdamRule.self)
    list.add(kernelsOf: AdadeltaRule.self)
    list.add(kernelsOf: RpropRule.self)
    list.add(kernelsOf: ASGDRule.self)
    list.add(kernelsOf: SparseAdamRule.self)
    list.add(AdafactorRule.self)
    list.add(MuonRule.self)
    list.add(LBFGS.self)
    list.add(kernelsOf: ScheduleFreeAdamWRule.self)
    list.add(kernelsOf: ScheduleFreeSGDRule.self)
    list.add(kernelsOf: AdanRule.self)
    list.add(kernelsOf: AdEMAMixRule.self)
    list.add(kernelsOf: LAMBRule.self)
    list.add(kernelsOf: LARSRule.self)
    list.add(kernelsOf: MARSRule.self)
    list.add(SOAPRule.self)
    list.add(Prodigy.self)
}

#if OPTIM_KERNELS_AVX2 || OPTIM_KERNELS_AVX512
/// The rule's loops, inlined here. The closures must be written in this module: a closure (or an
/// out-of-line specialization) of a generic function of Optim has the same symbol name in both
/// kernel modules and in Optim, the linker keeps one copy of such weak symbols, and a path would
/// run another path's code (tools/check-kernel-symbols.sh, run by CI, checks the objects).
func compiled<Rule: UpdateRule>(_ rule: Rule.Type) -> RuleKernels<Rule.Coefficients> {
    RuleKernels<Rule.Coefficients>(update: { Rule.update($0, $1, $2) }, updateCollecting: { Rule.updateCollecting($0, $1, $2) },
                                   pass: { Rule.pass($0, $1, $2, $3) },
                                   updateQuantized: Rule.stateDTypes.contains(where: \.isQuantized) ? { Rule.updateQuantized($0, $1, $2, collectingMetrics: $3) } : nil)
}

/// Compiles the listed rules' loops into a kernel table (through a pointer: copying a
/// `KernelTable` here would compile Optim's copy code into this module).
struct RuleCompiler: OptimizerListVisitor {
    let table: UnsafeMutablePointer<KernelTable>

    mutating func add<Rule: UpdateRule & RegistryEntry>(kernelsOf rule: Rule.Type) {
        table.pointee.add(rule, compiled(rule))
    }

    mutating func add<Entry: RegistryEntry>(_ entry: Entry.Type) {}

    /// Adds the kernels of every rule the list gives with `kernelsOf:` to `table`.
    static func addRules(to table: inout KernelTable) {
        withUnsafeMutablePointer(to: &table) { pointer in
            var compiler = RuleCompiler(table: pointer)
            visitOptimizerList(&compiler)
        }
    }
}
#else
/// Collects the list's entries for ``OptimizerRegistry/all``.
struct OptimizerListEntries: OptimizerListVisitor {
    var entries: [OptimizerInfo] = []

    mutating func add<Rule: UpdateRule & RegistryEntry>(kernelsOf rule: Rule.Type) {
        entries.append(Rule.info)
    }

    mutating func add<Entry: RegistryEntry>(_ entry: Entry.Type) {
        entries.append(Entry.info)
    }

    /// Every entry, in list order.
    static var all: [OptimizerInfo] {
        var list = OptimizerListEntries()
        visitOptimizerList(&list)
        return list.entries
    }
}
#endif
