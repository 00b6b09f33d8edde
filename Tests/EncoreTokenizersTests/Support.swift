import Foundation
import XCTest
@testable import EncoreTokenizers

/// Paths of the committed fixtures.
enum Fixtures {
    static var root: String {
        Bundle.module.resourceURL!.appendingPathComponent("Fixtures").path
    }
    static func path(_ rel: String) -> String { (root as NSString).appendingPathComponent(rel) }

    static func json(_ rel: String) throws -> Any {
        let data = try Data(contentsOf: URL(fileURLWithPath: path(rel)))
        return try JSONSerialization.jsonObject(with: data)
    }
}

/// One golden case made by tools/goldens/tokenizers/make_goldens.py with HF `tokenizers`.
struct GoldenCase {
    let text: String
    let ids: [Int]
    let idsNoSpecial: [Int]
    let idsSpecialAsText: [Int]
    let decoded: String
    let decodedSkipSpecial: String
}

func loadGolden(_ name: String) throws -> [GoldenCase] {
    guard let root = try Fixtures.json("\(name)/golden.json") as? [String: Any],
          let cases = root["cases"] as? [[String: Any]] else {
        throw TokenizerError(.config, "bad golden file for \(name)")
    }
    return cases.map { c in
        GoldenCase(text: c["text"] as! String, ids: (c["ids"] as! [NSNumber]).map { $0.intValue },
                   idsNoSpecial: (c["ids_no_special"] as! [NSNumber]).map { $0.intValue },
                   idsSpecialAsText: (c["ids_special_as_text"] as! [NSNumber]).map { $0.intValue },
                   decoded: c["decoded"] as! String, decodedSkipSpecial: c["decoded_skip_special"] as! String)
    }
}

/// The first index where two id lists differ, for readable failure messages.
func firstDiff(_ a: [Int], _ b: [Int]) -> String {
    let n = min(a.count, b.count)
    for i in 0..<n where a[i] != b[i] {
        return "first difference at \(i): expected \(Array(a[max(0, i - 2)..<min(a.count, i + 4)])) got \(Array(b[max(0, i - 2)..<min(b.count, i + 4)]))"
    }
    return "lengths differ: expected \(a.count) ids, got \(b.count)"
}

/// Checks every golden case: ids exactly (with and without special tokens), decoded text exactly.
/// Returns the number of cases checked.
@discardableResult
func checkGoldens(_ tok: Tokenizer, _ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> Int {
    let cases = try loadGolden(name)
    XCTAssertGreaterThanOrEqual(cases.count, 30, "\(name): golden file has too few cases", file: file, line: line)
    for (i, c) in cases.enumerated() {
        let ids = tok.encode(c.text)
        if ids != c.ids {
            XCTFail("\(name) case \(i) \(c.text.debugDescription): encode ids differ; \(firstDiff(c.ids, ids))", file: file, line: line)
        }
        let idsNS = tok.encode(c.text, addSpecialTokens: false)
        if idsNS != c.idsNoSpecial {
            XCTFail("\(name) case \(i) \(c.text.debugDescription): encode(addSpecialTokens: false) differs; \(firstDiff(c.idsNoSpecial, idsNS))", file: file, line: line)
        }
        let idsST = tok.encode(c.text, addSpecialTokens: true, parseSpecialTokens: false)
        if idsST != c.idsSpecialAsText {
            XCTFail("\(name) case \(i) \(c.text.debugDescription): encode(parseSpecialTokens: false) differs; \(firstDiff(c.idsSpecialAsText, idsST))", file: file, line: line)
        }
        let dec = tok.decode(c.ids)
        XCTAssertEqual(dec, c.decoded, "\(name) case \(i): decode differs", file: file, line: line)
        let decSkip = tok.decode(c.ids, skipSpecialTokens: true)
        XCTAssertEqual(decSkip, c.decodedSkipSpecial, "\(name) case \(i): decode(skipSpecialTokens) differs", file: file, line: line)
    }
    return cases.count
}
