import Foundation
import XCTest
@testable import EncoreTokenizers

/// One small tokenizer per tokenizer.json component (normalizers, pre-tokenizers with every split
/// behaviour, models, post-processors, decoders, added-token flags), each against HF goldens.
final class ComponentTests: XCTestCase {
    func testEveryComponentConfiguration() throws {
        let dir = Fixtures.path("components")
        let names = try FileManager.default.contentsOfDirectory(atPath: dir).filter { !$0.hasSuffix(".md") }.sorted()
        XCTAssertGreaterThanOrEqual(names.count, 19, "component fixtures missing")
        var checked = 0
        for name in names {
            let tok: Tokenizer
            do {
                tok = try Tokenizer.load(path: (dir as NSString).appendingPathComponent(name))
            } catch {
                XCTFail("\(name): load failed: \(error)")
                continue
            }
            checked += try checkGoldens(tok, "components/\(name)")
        }
        XCTAssertGreaterThanOrEqual(checked, 19 * 40)
    }
}
