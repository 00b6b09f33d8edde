import ArgumentParser
import Encore
import Foundation

@main
struct EncoreCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encore",
        abstract: "Encoder-decoder small language models on CPU: generate, score, tokenize, inspect and benchmark.",
        discussion: """
        A model is a folder holding config.json + model.safetensors (model_type "mu" for the paper's \
        encoder-decoder, "mu_decoder" for its matched decoder-only baseline, "llama" for a Hugging Face \
        Llama-family model), or a Llama-family .gguf file (weights dequantized to fp32 on load; its \
        vocabulary serves --prompt).

        Examples:
          encore bench --preset mu-330m --input-tokens 512 --output-tokens 64
          encore generate --model models/mu --input-ids 5,6,7 --max-tokens 20 --json
          encore score --model models/mu --input-ids 5,6,7 --target-ids 8,9 --json
          encore inspect models/mu
          scripts/fetch-smollm2.sh && encore generate --model models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
            --prompt $'<|im_start|>user\\nWhat is the capital of France?<|im_end|>\\n<|im_start|>assistant\\n'

        Environment:
          ENCORE_BLAS            the library of the fp32 GEMMs: auto (the default: Intel MKL on an Intel CPU \
        when one is installed, looked for in models/mkl/ by the executable, where `bash scripts/fetch-mkl.sh` puts \
        it, then $VIRTUAL_ENV/lib, $CONDA_PREFIX/lib and the loader's path; else the linked OpenBLAS), openblas, \
        mkl, or a libmkl_rt.so PATH
          OPENBLAS_CORETYPE      OpenBLAS's kernel set (Encore picks SkylakeX or Haswell when OpenBLAS falls back \
        to pre-AVX2 kernels on a CPU it does not know; a set you choose is kept, and the bench header says when it is \
        older than the CPU runs)
          ENCORE_STEP_PROFILE=1  encore bench: where each decode step's time goes
        """,
        version: EncoreVersion.string,
        subcommands: [GenerateCommand.self, ScoreCommand.self, TokenizeCommand.self, DetokenizeCommand.self, TokenizerBenchCommand.self,
                      InspectCommand.self, InitCommand.self, QuantizeCommand.self, BenchCommand.self, BenchTrainCommand.self, TrainCommand.self,
                      DistillCommand.self, ChatCommand.self]
    )
}

enum EncoreVersion {
    static let string = "0.1.0"
}

/// Parses "1,2,3" (spaces allowed) into ids, naming the bad item.
func parseIds(_ text: String, option: String) throws -> [Int] {
    let parts = text.split(whereSeparator: { $0 == "," || $0 == " " }).map(String.init)
    guard !parts.isEmpty else { throw ValidationError("\(option): expected comma-separated token ids, got an empty list") }
    return try parts.enumerated().map { i, p in
        guard let v = Int(p) else { throw ValidationError("\(option): item \(i + 1) '\(p)' is not an integer token id") }
        return v
    }
}

func jsonString(_ object: Any) -> String {
    guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]),
          let s = String(data: data, encoding: .utf8) else { return "{}" }
    return s
}

func printError(_ message: String) {
    FileHandle.standardError.write(("error: " + message + "\n").data(using: .utf8)!)
}

func printStderr(_ message: String, terminator: String = "\n") {
    FileHandle.standardError.write((message + terminator).data(using: .utf8)!)
}

/// Runs `body`, turning Encore's errors into a clean message and exit code 1 (never a crash trace).
func runReportingErrors(_ body: () throws -> Void) throws {
    do {
        try Backend.selectBLASFromEnvironment()   // ENCORE_BLAS naming a library that cannot be loaded: exit 1
        try body()
    } catch let error as EncoreError {
        printError(error.message)
        throw ExitCode(1)
    }
}
