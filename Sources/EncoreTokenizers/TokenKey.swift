import Foundation

/// A dictionary key that compares strings by their UTF-8 bytes.
///
/// Swift's `String` equality uses canonical equivalence, so "ά" (U+1F71) and "ά" (U+03AC) are
/// equal as `String`s — but they are different tokens in real vocabularies. Every vocabulary,
/// cache and token set in this module is keyed by `TokenKey` so distinct byte strings stay distinct.
struct TokenKey: Hashable, Sendable {
    let string: String

    @inline(__always) init(_ s: String) { string = s }

    @inline(__always) static func == (a: TokenKey, b: TokenKey) -> Bool {
        sameBytes(a.string, b.string)
    }

    @inline(__always) func hash(into hasher: inout Hasher) {
        var s = string
        s.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }
}

/// Byte-wise string equality (see `TokenKey`).
@inline(__always) func sameBytes(_ a: String, _ b: String) -> Bool {
    guard a.utf8.count == b.utf8.count else { return false }
    var x = a, y = b
    return x.withUTF8 { px in
        y.withUTF8 { py in
            px.count == 0 || memcmp(px.baseAddress!, py.baseAddress!, px.count) == 0
        }
    }
}

typealias Vocab = [TokenKey: Int32]
