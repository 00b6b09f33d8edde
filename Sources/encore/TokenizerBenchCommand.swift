import ArgumentParser
import EncoreTokenizers
import Foundation

/// `encore bench-tokenizer TEXT TOKENIZER...`: encode speed, single thread and batched on all cores.
struct TokenizerBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-tokenizer", abstract: "Tokenizer speed: encode a text file line by line, single thread and batched, in MB/s.")

    @Argument(help: "Text file (see bench/tokenizers/bench_hf.py --make-text).")
    var text: String

    @Argument(help: "Tokenizers: tokenizer.json, folder or .gguf.")
    var tokenizers: [String]

    @Option(help: "Files of HF ids, one line of ids per text line (bench_hf.py with DUMP_IDS_DIR), one per tokenizer, to check parity on the whole text.")
    var expect: [String] = []

    func run() throws {
        guard let data = FileManager.default.contents(atPath: text) else {
            throw ValidationError("cannot read \(text)")
        }
        // Split on LF bytes (as Python's str.split("\n")); Swift's Character-based split would
        // keep "\r\n" together.
        let lines = [UInt8](data).split(separator: 0x0A, omittingEmptySubsequences: false)
            .map { String(decoding: $0, as: UTF8.self) }
        let mb = Double(data.count) / 1e6
        for path in tokenizers {
            let t0 = Date()
            let tok = try Tokenizer.load(path: path)
            let load = Date().timeIntervalSince(t0)
            let t1 = Date()
            var n = 0
            for line in lines { n += tok.encode(line, addSpecialTokens: false).count }
            let single = Date().timeIntervalSince(t1)
            // A fresh tokenizer so the batch run does not start with a warm word cache.
            let tok2 = try Tokenizer.load(path: path)
            let t2 = Date()
            let batch = tok2.encodeBatch(lines, addSpecialTokens: false)
            let batched = Date().timeIntervalSince(t2)
            let n2 = batch.reduce(0) { $0 + $1.count }
            if let i = tokenizers.firstIndex(of: path), i < expect.count {
                let ref = try String(contentsOfFile: expect[i], encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
                var bad = 0
                var firstBad: Int?
                for (k, ids) in batch.enumerated() {
                    let want = k < ref.count ? ref[k].split(separator: " ").compactMap { Int($0) } : []
                    if want != ids { bad += 1; if firstBad == nil { firstBad = k } }
                }
                print("parity with \(expect[i]): \(lines.count - bad)/\(lines.count) lines identical" +
                      (firstBad.map { "; first mismatch at line \($0): \(lines[$0].prefix(80).debugDescription)" } ?? ""))
            }
            print(String(format: "Encore %@: load %.0f ms; %.1f MB, %d tokens; single thread %.2f MB/s; encodeBatch (%d threads) %.2f MB/s (%d tokens)",
                         path, load * 1000, mb, n, mb / single, ProcessInfo.processInfo.activeProcessorCount, mb / batched, n2))
        }
    }
}
