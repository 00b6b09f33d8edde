import XCTest
@testable import EncoreTokenizers

/// Streaming decode gives, piece by piece, the same text as one `decode` call.
final class StreamingDecoderTests: XCTestCase {
    func testStreamEqualsFullDecode() throws {
        for (name, path) in [("phi-3.5-mini", "phi-3.5-mini"), ("gpt2-whisper", "gpt2-whisper/tokenizer.json"),
                             ("smollm2", "smollm2/smollm2-vocab.gguf"), ("unigram-bytefallback", "unigram-bytefallback/tokenizer.json")] {
            let tok = try Tokenizer.load(path: Fixtures.path(path))
            var checked = 0
            for c in try loadGolden(name) where !c.decoded.hasSuffix("\u{FFFD}") {
                var stream = StreamingDecoder(tokenizer: tok)
                var out = ""
                for id in c.ids { out += stream.push(id) ?? "" }
                XCTAssertEqual(out, c.decoded, "\(name): \(c.text.debugDescription)")
                checked += 1
            }
            XCTAssertGreaterThan(checked, 30, name)
        }
    }
}
