import Foundation

/// A growable byte buffer that `COPY ... (FORMAT binary)` data is encoded into, reused for the lifetime of a
/// writer so that encoding allocates nothing per reading. Not Sendable: owned by one writer thread.
final class CopyBuffer {
    private(set) var base: UnsafeMutableRawPointer
    private(set) var capacity: Int
    /// Bytes written so far.
    var count = 0

    init(capacity: Int = 1 << 20) {
        self.capacity = max(capacity, 64)
        self.base = UnsafeMutableRawPointer.allocate(byteCount: self.capacity, alignment: 16)
    }

    deinit { base.deallocate() }

    /// The bytes written so far.
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// Forgets the content, keeping the memory.
    func removeAll() { count = 0 }

    /// Makes room for `extra` more bytes (growing geometrically, so amortised O(1)).
    @inline(__always)
    func reserve(_ extra: Int) {
        if count + extra > capacity { grow(to: count + extra) }
    }

    private func grow(to needed: Int) {
        var newCapacity = capacity * 2
        while newCapacity < needed { newCapacity *= 2 }
        let newBase = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
        newBase.copyMemory(from: base, byteCount: count)
        base.deallocate()
        base = newBase
        capacity = newCapacity
    }

    @inline(__always) func append(int16 value: Int16) {
        reserve(2)
        (base + count).storeBytes(of: value.bigEndian, as: Int16.self)
        count += 2
    }

    @inline(__always) func append(int32 value: Int32) {
        reserve(4)
        (base + count).storeBytes(of: value.bigEndian, as: Int32.self)
        count += 4
    }

    @inline(__always) func append(int64 value: Int64) {
        reserve(8)
        (base + count).storeBytes(of: value.bigEndian, as: Int64.self)
        count += 8
    }

    func append(bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        reserve(bytes.count)
        (base + count).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        count += bytes.count
    }

    func append(bytes: [UInt8]) {
        bytes.withUnsafeBytes { append(bytes: $0) }
    }
}
