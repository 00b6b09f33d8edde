import XCTest
@testable import Encore

/// `encore bench --model` on a model of another family (the tiny Llama GGUF): it is timed alone, with the JSON
/// the peer drivers in bench/peers/ read; bad --models values fail with a message. (No timing is asserted.)
final class BenchCLITests: XCTestCase {
    func testBenchTimesALlamaGGUFAlone() throws {
        let r = runCLI(["bench", "--model", fixture("tiny_llama/f32.gguf"), "--input-tokens", "8,16", "--output-tokens", "3",
                        "--reps", "1", "--threads", "1", "--json", "--no-limits"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        let results = try XCTUnwrap(o["results"] as? [[String: Any]])
        XCTAssertEqual(results.map { $0["model"] as? String }, ["llama", "llama"], "only the loaded model, no random Mu pair")
        XCTAssertEqual(results.map { $0["input_tokens"] as? Int }, [8, 16])
        for res in results {
            XCTAssertEqual(res["output_tokens"] as? Int, 3)
            for key in ["ttft_ms", "decode_tokens_per_s", "peak_rss_mb"] {
                let v = try XCTUnwrap(res[key] as? Double, key)
                XCTAssertTrue(v.isFinite && v > 0, "\(key) = \(v)")
            }
        }
        XCTAssertEqual(o["decode_weights"] as? String, "f32")
        XCTAssertEqual(o["kv_cache"] as? String, "auto")
        XCTAssertEqual(results.map { $0["kv_cache"] as? String }, ["f32", "f32"], "fp32 weights: auto keeps the fp32 cache")
        XCTAssertEqual(o["prompt_weights"] as? String, "f32", "no --keep-quantized: --prompt-weights auto is f32")
    }

    /// `--prompt-weights auto` (the default) on a GGUF kept quantized: the prompt passes run on the blocks, as
    /// `--prompt-weights blocks` (the JSON names what ran; the header line names the block GEMM).
    func testAutoPromptWeightsOnKeptBlocks() throws {
        let r = runCLI(["bench", "--model", fixture("tiny_llama/q5.gguf"), "--keep-quantized", "--input-tokens", "16",
                        "--output-tokens", "2", "--reps", "1", "--threads", "1", "--quality-tokens", "0", "--no-limits", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        XCTAssertEqual(o["prompt_weights"] as? String, "blocks")
        let t = runCLI(["bench", "--model", fixture("tiny_llama/q5.gguf"), "--keep-quantized", "--input-tokens", "16",
                        "--output-tokens", "2", "--reps", "1", "--threads", "1", "--quality-tokens", "0", "--no-limits"])
        XCTAssertEqual(t.status, 0, t.stderr)
        XCTAssertTrue(t.stdout.contains("prompt passes on the decode blocks as stored"), t.stdout)
        // an F32 GGUF has no blocks to keep: auto stays f32, as generate's
        let f = runCLI(["bench", "--model", fixture("tiny_llama/f32.gguf"), "--keep-quantized", "--input-tokens", "16",
                        "--output-tokens", "2", "--reps", "1", "--threads", "1", "--quality-tokens", "0", "--no-limits", "--json"])
        XCTAssertEqual(f.status, 0, f.stderr)
        let fo = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(f.stdout.utf8)) as? [String: Any], f.stdout)
        XCTAssertEqual(fo["prompt_weights"] as? String, "f32")
    }

    /// Each row's JSON and table line say which KV cache it ran: auto gives f16 to the quantized row only; --kv-cache
    /// f32 gives fp32 to both.
    func testBenchRowsNameTheirKVCache() throws {
        func rows(_ extra: [String]) throws -> (json: [String?], table: String) {
            let args = ["bench", "--model", fixture("tiny_llama/f32.gguf"), "--decode-weights", "f32,q8_0", "--input-tokens", "8",
                        "--output-tokens", "2", "--reps", "1", "--threads", "1", "--quality-tokens", "0", "--no-limits"] + extra
            let r = runCLI(args + ["--json"]), t = runCLI(args)
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertEqual(t.status, 0, t.stderr)
            let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
            return ((try XCTUnwrap(o["results"] as? [[String: Any]])).map { $0["kv_cache"] as? String }, t.stdout)
        }
        let auto = try rows([])
        XCTAssertEqual(auto.json, ["f32", "f16"])
        XCTAssertTrue(auto.table.contains("llama       f32     f32 "), auto.table)
        XCTAssertTrue(auto.table.contains("llama       q8_0    f16 "), auto.table)
        XCTAssertTrue(auto.table.contains("KV caches auto (f16 for bf16 / quantized decode weights)"), auto.table)
        XCTAssertEqual(try rows(["--kv-cache", "f32"]).json, ["f32", "f32"])
        XCTAssertEqual(try rows(["--kv-cache", "f16"]).json, ["f16", "f16"])
    }

    /// The quality report scores a fixed English text when the checkpoint has a tokenizer (the tiny HF Llama with a
    /// ChatML tokenizer), and fixed random ids otherwise (a Mu fixture without a tokenizer).
    func testQualityOnAFixedTextWhenThereIsATokenizer() throws {
        func quality(_ model: String, _ extra: [String] = []) throws -> [String: Any] {
            let r = runCLI(["bench", "--model", model, "--input-tokens", "8", "--output-tokens", "2", "--reps", "1",
                            "--threads", "1", "--decode-weights", "q8_0", "--quality-tokens", "16", "--json", "--no-limits"] + extra)
            XCTAssertEqual(r.status, 0, r.stderr)
            let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
            return try XCTUnwrap((o["quality"] as? [[String: Any]])?.first, r.stdout)
        }
        let text = try quality(fixture("hf_decoders/llama"))
        XCTAssertEqual(text["sequence"] as? String, "fixed English text")
        XCTAssertEqual(text["tokens"] as? Int, 16)
        let ids = try quality(fixture("mu/gqa_mod"), ["--models", "mu"])
        XCTAssertEqual(ids["sequence"] as? String, "fixed random token ids")
        let ppl = try XCTUnwrap(text["perplexity_f32"] as? Double)
        XCTAssertTrue(ppl.isFinite && ppl > 1, "\(ppl)")
    }

    func testBenchModelsSelection() {
        let sel = runCLI(["bench", "--model", fixture("tiny_llama/f32.gguf"), "--models", "model", "--input-tokens", "4",
                          "--output-tokens", "2", "--reps", "1", "--threads", "1", "--no-limits"])
        XCTAssertEqual(sel.status, 0, sel.stderr)
        XCTAssertTrue(sel.stdout.contains("llama"), sel.stdout)

        let noModel = runCLI(["bench", "--models", "model"])
        XCTAssertNotEqual(noModel.status, 0)
        XCTAssertTrue(noModel.stderr.contains("--models model needs --model"), noModel.stderr)

        let unknown = runCLI(["bench", "--models", "gpt"])
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.stderr.contains("unknown model 'gpt'"), unknown.stderr)

        // a format listed twice (also through an alias) is refused, not measured twice (it crashed building the JSON)
        let twice = runCLI(["bench", "--model", fixture("tiny_llama/f32.gguf"), "--decode-weights", "f32,q8_0,fp32",
                            "--input-tokens", "4", "--output-tokens", "2", "--reps", "1", "--no-limits"])
        XCTAssertNotEqual(twice.status, 0)
        XCTAssertTrue(twice.stderr.contains("f32 is listed more than once"), twice.stderr)

        let wrongType = runCLI(["bench", "--model", fixture("tiny_llama/f32.gguf"), "--models", "mu_decoder,llama",
                                "--input-tokens", "4", "--output-tokens", "2", "--reps", "1", "--no-limits"])
        XCTAssertNotEqual(wrongType.status, 0, "'llama' is not a --models name (use 'model')")
    }

    /// `--step-ab` (alternating decode steps of two variants: shared-gemv, cross-kv, cross-kv8, streams, tasks, q4y, ymm, prefetch; or each
    /// step against a read of its bytes: read), `--cross-kv f16` and `int8` (bench and generate) run on a small Mu and a Llama GGUF
    /// and print their lines; bad values and a cross-kv A/B on a non-Mu model fail with a message. (No timing asserted.)
    func testStepABAndCrossKV() throws {
        let mu = fixture("mu/gqa_mod")
        let shared = runCLI(["bench", "--step-ab", "shared-gemv", "--model", mu, "--input-tokens", "6", "--output-tokens", "3",
                             "--decode-weights", "f32,q8_0", "--threads", "1", "--no-limits"])
        XCTAssertEqual(shared.status, 0, shared.stderr)
        XCTAssertTrue(shared.stdout.contains("q8_0: A ") && shared.stdout.contains("f32: A ") && shared.stdout.contains("B/A speed"), shared.stdout)
        let cross = runCLI(["bench", "--step-ab", "cross-kv", "--model", mu, "--input-tokens", "6", "--output-tokens", "3",
                            "--decode-weights", "q4_0", "--threads", "1", "--no-limits"])
        XCTAssertEqual(cross.status, 0, cross.stderr)
        XCTAssertTrue(cross.stdout.contains("cross K/V f16") && cross.stdout.contains("q4_0: A "), cross.stdout)
        let llama = runCLI(["bench", "--step-ab", "shared-gemv", "--model", fixture("tiny_llama/f32.gguf"), "--input-tokens", "4",
                            "--output-tokens", "3", "--decode-weights", "q4_0", "--threads", "1", "--no-limits"])
        XCTAssertEqual(llama.status, 0, llama.stderr)
        XCTAssertTrue(llama.stdout.contains("llama decode steps"), llama.stdout)
        let read = runCLI(["bench", "--step-ab", "read", "--model", fixture("tiny_llama/f32.gguf"), "--input-tokens", "4",
                           "--output-tokens", "3", "--decode-weights", "f32,q8_0", "--threads", "1", "--no-limits"])
        XCTAssertEqual(read.status, 0, read.stderr)
        for format in ["f32", "q8_0"] {   // one line per format, with the pairs' fractions
            let line = read.stdout.split(separator: "\n").first { $0.hasPrefix("\(format): ") }
            XCTAssertNotNil(line, read.stdout)
            XCTAssertTrue(line?.contains("% of the read") == true && line?.contains("GB a step") == true, read.stdout)
        }
        #if arch(x86_64)
        let streams = runCLI(["bench", "--step-ab", "streams", "--model", fixture("tiny_llama/f32.gguf"), "--input-tokens", "4",
                              "--output-tokens", "3", "--decode-weights", "int8,q4_0", "--threads", "1", "--no-limits"])
        XCTAssertEqual(streams.status, 0, streams.stderr)
        XCTAssertTrue(streams.stdout.contains("B = 4 rows side by side per thread") && streams.stdout.contains("q4_0: A "), streams.stdout)
        let q4y = runCLI(["bench", "--step-ab", "q4y", "--model", fixture("tiny_llama/f32.gguf"), "--input-tokens", "4",
                          "--output-tokens", "3", "--decode-weights", "q4_0", "--threads", "1", "--no-limits"])
        XCTAssertEqual(q4y.status, 0, q4y.stderr)
        XCTAssertTrue(q4y.stdout.contains("B = Q4 rows on rows_q4y") && q4y.stdout.contains("q4_0: A "), q4y.stdout)
        let ymm = runCLI(["bench", "--step-ab", "ymm", "--model", fixture("tiny_llama/f32.gguf"), "--input-tokens", "4",
                          "--output-tokens", "3", "--decode-weights", "bf16,q4_0", "--threads", "1", "--no-limits"])
        XCTAssertEqual(ymm.status, 0, ymm.stderr)
        XCTAssertTrue(ymm.stdout.contains("B = f32 / bf16 / int8 GEMVs on ymm") && ymm.stdout.contains("bf16: A "), ymm.stdout)
        // the paths each side runs: bf16 differs on AVX-512 CPUs; the 4-bit blocks keep one kernel on every CPU
        XCTAssertTrue(ymm.stdout.contains("q4_0: A ") && ymm.stdout.contains("(one kernel: A and B are the same)"), ymm.stdout)
        let prefetch = runCLI(["bench", "--step-ab", "prefetch", "--model", fixture("tiny_llama/f32.gguf"), "--input-tokens", "4",
                               "--output-tokens", "3", "--decode-weights", "q4_0", "--threads", "1", "--no-limits"])
        XCTAssertEqual(prefetch.status, 0, prefetch.stderr)
        XCTAssertTrue(prefetch.stdout.contains("B = decode GEMVs with software prefetch") && prefetch.stdout.contains("q4_0: A "), prefetch.stdout)
        let bf16Paths = ymm.stdout.split(separator: "\n").first { $0.hasPrefix("bf16: A ") && !$0.contains("ms") }
        defer { Backend.decodeGEMVOnYMM = nil }
        Backend.decodeGEMVOnYMM = false
        let zmmPath = WeightFormat.bf16.kernelPath
        Backend.decodeGEMVOnYMM = true
        XCTAssertEqual(bf16Paths.map(String.init), "bf16: A \(zmmPath), B \(WeightFormat.bf16.kernelPath)"
                       + (zmmPath == WeightFormat.bf16.kernelPath ? " (one kernel: A and B are the same)" : ""), ymm.stdout)
        #endif
        let tasks = runCLI(["bench", "--step-ab", "tasks", "--model", fixture("tiny_llama/f32.gguf"), "--input-tokens", "4",
                            "--output-tokens", "3", "--decode-weights", "int8", "--threads", "2", "--no-limits"])
        XCTAssertEqual(tasks.status, 0, tasks.stderr)
        XCTAssertTrue(tasks.stdout.contains("B = at least 1 row range per thread") && tasks.stdout.contains("int8: A "), tasks.stdout)
        let half = runCLI(["bench", "--model", mu, "--models", "mu", "--cross-kv", "f16", "--input-tokens", "6", "--output-tokens", "2",
                           "--reps", "1", "--threads", "1", "--no-limits", "--json"])
        XCTAssertEqual(half.status, 0, half.stderr)
        let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(half.stdout.utf8)) as? [String: Any], half.stdout)
        XCTAssertEqual(o["cross_kv"] as? String, "f16")
        let int8 = runCLI(["bench", "--model", mu, "--models", "mu", "--cross-kv", "int8", "--input-tokens", "6", "--output-tokens", "2",
                           "--reps", "1", "--threads", "1", "--no-limits", "--json"])
        XCTAssertEqual(int8.status, 0, int8.stderr)
        let o8 = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(int8.stdout.utf8)) as? [String: Any], int8.stdout)
        XCTAssertEqual(o8["cross_kv"] as? String, "int8")
        let rows8 = try XCTUnwrap(o8["results"] as? [[String: Any]], int8.stdout)
        XCTAssertEqual(rows8.first { $0["model"] as? String == "mu" }?["cross_kv"] as? String, "int8", int8.stdout)
        let cross8 = runCLI(["bench", "--step-ab", "cross-kv8", "--model", mu, "--input-tokens", "6", "--output-tokens", "3",
                             "--decode-weights", "q4_0", "--threads", "1", "--no-limits"])
        XCTAssertEqual(cross8.status, 0, cross8.stderr)
        XCTAssertTrue(cross8.stdout.contains("B = cross K/V int8") && cross8.stdout.contains("q4_0: A "), cross8.stdout)
        // generate takes --cross-kv too: int8 runs; a bad value is a usage error naming the option
        let gen = runCLI(["generate", "--model", mu, "--input-ids", "5,6,7", "--max-tokens", "3", "--cross-kv", "int8"])
        XCTAssertEqual(gen.status, 0, gen.stderr)
        let badGen = runCLI(["generate", "--model", mu, "--input-ids", "5,6,7", "--cross-kv", "q4"])
        XCTAssertEqual(badGen.status, 64)
        XCTAssertTrue(badGen.stderr.contains("--cross-kv"), badGen.stderr)
        for bad in [["--step-ab", "fused"], ["--cross-kv", "int4"]] {
            let r = runCLI(["bench"] + bad)
            XCTAssertNotEqual(r.status, 0, bad.joined(separator: " "))
            XCTAssertTrue(r.stderr.contains(bad[0]), r.stderr)
        }
        let notMu = runCLI(["bench", "--step-ab", "cross-kv", "--model", fixture("tiny_llama/f32.gguf"), "--input-tokens", "4",
                            "--output-tokens", "2", "--no-limits"])
        XCTAssertNotEqual(notMu.status, 0)
        XCTAssertTrue(notMu.stderr.contains("needs a Mu or T5 model"), notMu.stderr)
    }
}
