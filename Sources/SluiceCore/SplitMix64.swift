/// SplitMix64: a tiny, fast pseudo-random generator, the same on every platform.
///
/// For what needs speed or replay rather than secrecy: `sluice bench`'s random walks (the system generator
/// costs a `getrandom` call per number) and seeded tests that must replay the same way everywhere.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    /// A replayable sequence. The seed is scrambled first, so neighbouring seeds give unrelated sequences
    /// rather than the same one shifted by a step.
    public init(seed: UInt64) {
        var z = seed &+ 0x6A09_E667_F3BC_C909
        z = (z ^ (z >> 33)) &* 0xFF51_AFD7_ED55_8CCD
        z = (z ^ (z >> 33)) &* 0xC4CE_B9FE_1A85_EC53
        state = z ^ (z >> 33)
    }

    /// A sequence seeded from the system generator.
    public init() {
        var system = SystemRandomNumberGenerator()
        state = system.next()
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
