import ArgumentParser
import Encore
import EncoreTokenizers
import Foundation

struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Chat with a model turn by turn, using its chat template (ChatML or Phi-3), streaming the replies.",
        discussion: """
        Reads one user message per line from standard input (or takes them from repeated --message options), \
        renders the whole conversation with the model's chat template (a .gguf file's tokenizer.chat_template, or \
        a folder's tokenizer.json + tokenizer_config.json), and streams the assistant's reply until the template's \
        end-of-turn token or the model's EOS. After each reply a line on standard error gives the reply's tokens, \
        the time to its first token and the decode speed. When the conversation outgrows the model's context, the \
        oldest turns are dropped (the system message stays). Lines /reset (forget the conversation) and /exit.

        Example:
          encore chat --model models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
          encore chat --model models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --message "What is the capital of France?"
          encore chat --model models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --keep-quantized   # Q4_1 blocks, f16 cache (--kv-cache auto)
        """
    )

    @Option(name: .long, help: "Model folder (with tokenizer.json) or a .gguf file.")
    var model: String

    @Option(help: "System message (default: the template's own, if it has one).")
    var system: String?

    @Option(help: "A user message; repeat for several turns (no standard input is read then).")
    var message: [String] = []

    @Option(name: .customLong("max-tokens"), help: "Most tokens per reply.")
    var maxTokens: Int = 256

    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 0

    @Option(name: .customLong("top-k"), help: "Sample only among the K most likely tokens (0 = off).")
    var topK: Int = 0

    @Option(name: .customLong("top-p"), help: "Sample only among the most likely tokens whose probability adds up to P (1 = off).")
    var topP: Float = 1

    @Option(help: "Random seed for sampling.")
    var seed: UInt64 = 0

    @Option(help: "Threads for matrix products (default: all cores).")
    var threads: Int?

    @OptionGroup var runtime: RuntimeOptions

    @Flag(help: "Print each turn's prompt token ids on standard error.")
    var verbose = false

    func validate() throws {
        if maxTokens < 1 { throw ValidationError("--max-tokens must be >= 1") }
        if temperature < 0 { throw ValidationError("--temperature must be >= 0") }
        if topK < 0 { throw ValidationError("--top-k must be >= 0") }
        if !(topP > 0 && topP <= 1) { throw ValidationError("--top-p must be in (0, 1]") }
        if let threads, threads < 1 { throw ValidationError("--threads must be >= 1") }
    }

    func run() throws {
        try runReportingErrors {
            if let threads { Backend.setThreads(threads) }
            let lm = try runtime.load(model)
            guard let codec = try TextCodec.load(folder: model, required: false) else {
                throw EncoreError(.invalidArgument, "\(model): no tokenizer.json; chat needs the model's tokenizer and its chat template")
            }
            let tokenizer = codec.tokenizer
            let kind: ChatTemplateKind
            do { kind = try tokenizer.chatTemplateKind() } catch let e as TokenizerError {
                throw EncoreError(.unsupported, "\(model): \(e.description)")
            }
            // A reply ends at the template's end-of-turn token or the model's EOS.
            var stops = Set([lm.eosTokenId, tokenizer.eosTokenId].compactMap { $0 })
            if let end = tokenizer.tokenToId(kind == .chatML ? "<|im_end|>" : "<|end|>") { stops.insert(end) }
            let contextLength = (lm as? LlamaModel)?.config.contextLength
            let interactive = message.isEmpty && isatty(STDIN_FILENO) == 1
            var history: [ChatMessage] = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
            var scripted = message.makeIterator()
            var sampleSeed = seed

            func nextLine() -> String? {
                if !message.isEmpty { return scripted.next() }
                if interactive { write("> ") }
                return readLine()
            }

            while let line = nextLine() {
                let text = line.trimmingCharacters(in: .whitespaces)
                if text.isEmpty { continue }
                if text == "/exit" || text == "/quit" { break }
                if text == "/reset" {
                    history = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
                    printStderr("(conversation cleared)")
                    continue
                }
                if !message.isEmpty { write("> " + text + "\n") }
                history.append(ChatMessage(role: "user", content: text))
                var ids = try render(history, tokenizer)
                if let contextLength {
                    // Drop the oldest exchanges (never the system message or the new turn) until the reply fits.
                    while ids.count + maxTokens > contextLength {
                        let first = history.first?.role == "system" ? 1 : 0
                        guard history.count - first > 1 else {
                            throw EncoreError(.invalidArgument, "the message is \(ids.count) tokens; with --max-tokens \(maxTokens) it does not fit the model's context of \(contextLength) tokens")
                        }
                        history.remove(at: first)
                        if history.count - first > 1, history[first].role == "assistant" { history.remove(at: first) }
                        ids = try render(history, tokenizer)
                    }
                }
                if verbose { printStderr("prompt ids: \(ids)") }
                var decoder = codec.streamingDecoder()
                var reply: [Int] = []
                let params = GenerationParameters(maxTokens: maxTokens, temperature: temperature, topK: topK, topP: topP,
                                                  seed: sampleSeed, useModelEOS: false)
                sampleSeed &+= 1
                let result = try Generator(model: lm).generate(prompts: [ids], parameters: params) { event in
                    if stops.contains(event.token) { return false }
                    reply.append(event.token)
                    if let piece = decoder.push(event.token), !piece.isEmpty {
                        write(piece)
                    }
                    return true
                }
                write("\n")
                history.append(ChatMessage(role: "assistant", content: codec.decode(reply).trimmingCharacters(in: .whitespacesAndNewlines)))
                let tps = result.decodeSeconds > 0 ? Double(result.decodeSteps) / result.decodeSeconds : 0
                printStderr(String(format: "[%d tokens; prompt %d tokens, first token %.0f ms; decode %.1f tokens/s]",
                                   reply.count, ids.count, result.timeToFirstToken * 1000, tps))
            }
        }
    }

    /// Unbuffered, so replies, prompts and the statistics on standard error appear in order.
    func write(_ text: String) { FileHandle.standardOutput.write(text.data(using: .utf8)!) }

    /// The conversation as token ids, ending with the assistant's generation prompt. The template writes the
    /// special tokens, so none are added around it.
    func render(_ history: [ChatMessage], _ tokenizer: Tokenizer) throws -> [Int] {
        let text: String
        do { text = try tokenizer.applyChatTemplate(messages: history, addGenerationPrompt: true) } catch let e as TokenizerError {
            throw EncoreError(.unsupported, "\(model): \(e.description)")
        }
        return tokenizer.encode(text, addSpecialTokens: false)
    }
}
