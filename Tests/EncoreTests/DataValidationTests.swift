import XCTest
@testable import Encore

/// Bad training data is found before training: skipped and counted, or an error naming the line.
final class DataValidationTests: XCTestCase {
    func file(_ lines: [String]) throws -> String {
        let path = NSTemporaryDirectory() + "encore-data-\(getpid())-\(UUID().uuidString).jsonl"
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func testMalformedLinesAreSkippedAndCounted() throws {
        let path = try file([#"{"source": [5, 6], "target": [7]}"#, #"{"source": [5, 6], "target": [7"#, "", "not json",
                             #"{"source": [5]}"#, #"{"source": [5, 1.5], "target": [7]}"#, #"[1, 2]"#, #"{"source": [8], "target": [9]}"#])
        let (examples, report) = try Seq2SeqData.read(path: path, vocabSize: 40)
        XCTAssertEqual(examples, [Seq2SeqExample(source: [5, 6], target: [7]), Seq2SeqExample(source: [8], target: [9])])
        XCTAssertEqual(report.malformedLines, [2, 4, 5, 6, 7])
        XCTAssertEqual(report.lines, 7)
        XCTAssertEqual(report.kept, 2)
        XCTAssertEqual(report.summary["malformed"] as? Int, 5)
        // the strict loader names the first bad line
        XCTAssertThrowsError(try Seq2SeqData.load(path: path)) { XCTAssertTrue("\($0)".contains(":2:"), "\($0)") }
    }

    func testEmptyTargetIsSkippedAndCounted() throws {
        let path = try file([#"{"source": [5, 6], "target": []}"#, #"{"source_ids": [5], "target_ids": [7]}"#, #"{"source": [], "target": [7]}"#])
        let (examples, report) = try Seq2SeqData.read(path: path, vocabSize: 40)
        XCTAssertEqual(examples, [Seq2SeqExample(source: [5], target: [7])])
        XCTAssertEqual(report.emptyLines, [1, 3])
        XCTAssertEqual(report.skipped, 2)
    }

    func testOverLongPairsAreTruncatedAndCounted() throws {
        let path = try file([#"{"source_ids": [5, 6, 7, 8, 9], "target_ids": [10, 11, 12]}"#,   // source 5 > 4, target 3 + EOS = 4 fits
                             #"{"source_ids": [5, 6], "target_ids": [10, 11, 12, 13]}"#,         // target 4 + EOS > 4
                             #"{"source_ids": [5, 6, 7, 8], "target_ids": [10]}"#])
        let (examples, report) = try Seq2SeqData.read(path: path, vocabSize: 40, encoderSeqLen: 4, decoderSeqLen: 4)
        XCTAssertEqual(examples.count, 3)
        XCTAssertEqual(report.truncatedSources, 1)
        XCTAssertEqual(report.truncatedTargets, 1)
        // truncated as the reference: source cut to 4, target + EOS cut to 4 (EOS lost)
        let b = Seq2SeqBatch(examples, encoderSeqLen: 4, decoderSeqLen: 4, bos: 1, eos: 2, pad: 0)
        XCTAssertEqual(b.encoderIds[0], [5, 6, 7, 8])
        XCTAssertEqual(b.targets[0], [10, 11, 12, 2])
        XCTAssertEqual(b.targets[1], [10, 11, 12, 13])
    }

    func testPreTokenizedIdsGetEOSAndOutOfVocabularyIdsNameTheLine() throws {
        let good = try file([#"{"source_ids": [5, 6], "target_ids": [7, 8]}"#])
        let (examples, _) = try Seq2SeqData.read(path: good, vocabSize: 40)
        XCTAssertEqual(examples, [Seq2SeqExample(source: [5, 6], target: [7, 8])])
        XCTAssertEqual(Seq2SeqBatch(examples, encoderSeqLen: 3, decoderSeqLen: 4, bos: 1, eos: 2, pad: 0).targets, [[7, 8, 2, 0]])

        let bad = try file([#"{"source_ids": [5, 6], "target_ids": [7]}"#, #"{"source_ids": [5], "target_ids": [7, 40]}"#])
        XCTAssertThrowsError(try Seq2SeqData.read(path: bad, vocabSize: 40)) {
            let m = "\($0)"
            XCTAssertTrue(m.contains(":2:") && m.contains("target_ids") && m.contains("40"), m)
        }
        let negative = try file([#"{"source": [-1], "target": [7]}"#])
        XCTAssertThrowsError(try Seq2SeqData.read(path: negative, vocabSize: 40)) { XCTAssertTrue("\($0)".contains(":1: 'source'"), "\($0)") }
    }
}
