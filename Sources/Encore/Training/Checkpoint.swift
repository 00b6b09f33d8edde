import Foundation

/// Resumable training checkpoints: one folder per save, `state-<step>`, holding
///
/// - `config.json` + `model.safetensors`: the model (reference names, F32; loadable by ``MuModel/init(folder:)``);
/// - `optimizer.safetensors`: AdamW's `m.<name>` and `v.<name>` per parameter, the per-parameter step counts in
///   the metadata entry `steps` (a JSON object name → count);
/// - `checkpoint.json`, written LAST: format, step, epoch, the current data order and cursor, the shuffling
///   and dropout SplitMix64 states (decimal strings: JSON numbers cannot hold every UInt64), the settings
///   that must match on resume, and the byte size of every other file.
///
/// Every file is written atomically (``AtomicFile``: temp file, fsync, rename). A folder counts as complete
/// only when `checkpoint.json` parses and every listed file has its listed size, so a save interrupted at
/// any point (or a file truncated later) is never taken for a checkpoint: ``latest(in:)`` skips it.
public enum TrainingCheckpoint {
    public static let format = "encore-train-checkpoint-1"
    /// Folder-name prefix inside a checkpoints directory.
    public static let prefix = "state-"

    /// The parsed `checkpoint.json` of a complete checkpoint folder, or nil if the folder is incomplete,
    /// damaged or not a checkpoint.
    public static func manifest(folder: String) -> [String: Any]? {
        guard let data = FileManager.default.contents(atPath: folder + "/checkpoint.json"),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              obj["format"] as? String == format, obj["step"] is NSNumber,
              let files = obj["files"] as? [String: NSNumber] else { return nil }
        for (name, size) in files {
            guard let attrs = try? FileManager.default.attributesOfItem(atPath: folder + "/" + name),
                  (attrs[.size] as? NSNumber)?.intValue == size.intValue else { return nil }
        }
        return obj
    }

    /// Complete checkpoint folders under `directory`, oldest (lowest step) first.
    public static func complete(in directory: String) -> [(path: String, step: Int)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasPrefix(prefix) }.compactMap { name -> (String, Int)? in
            let path = directory + "/" + name
            guard let m = manifest(folder: path), let step = (m["step"] as? NSNumber)?.intValue else { return nil }
            return (path, step)
        }.sorted { $0.1 < $1.1 }
    }

    /// The complete checkpoint with the highest step under `directory`, or nil.
    public static func latest(in directory: String) -> String? { complete(in: directory).last?.path }

    /// Removes all but the `keep` newest complete checkpoints, and incomplete `state-*` folders older than
    /// the newest complete one (leftovers of interrupted saves).
    public static func prune(directory: String, keep: Int = 2) {
        let done = complete(in: directory)
        guard let newest = done.last else { return }
        let kept = Set(done.suffix(max(1, keep)).map(\.path))
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names where name.hasPrefix(prefix) {
            let path = directory + "/" + name
            if kept.contains(path) { continue }
            if let step = Int(name.dropFirst(prefix.count)), step < newest.step || done.contains(where: { $0.path == path }) {
                try? FileManager.default.removeItem(atPath: path)
            }
        }
    }
}

extension Trainer {
    /// Writes a resumable checkpoint of the whole training state into `folder` (see ``TrainingCheckpoint``).
    /// `beforeWrite` is called with each file name before that file is written (tests inject failures
    /// there); if anything throws, the folder is left without a valid `checkpoint.json` and is ignored.
    public func saveCheckpoint(folder: String, beforeWrite: (String) throws -> Void = { _ in }) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: folder, withIntermediateDirectories: true)
        // an older manifest in this folder must not vouch for the files about to be replaced
        if fm.fileExists(atPath: folder + "/checkpoint.json") { try fm.removeItem(atPath: folder + "/checkpoint.json") }
        var sizes: [String: Int] = [:]
        func record(_ name: String) throws {
            let attrs = try fm.attributesOfItem(atPath: folder + "/" + name)
            sizes[name] = (attrs[.size] as? NSNumber)?.intValue ?? -1
        }
        try beforeWrite("config.json")
        try AtomicFile.write(try model.encodedConfig(), to: folder + "/config.json")
        try record("config.json")

        try beforeWrite("model.safetensors")
        try SafeTensorsWriter.write(model.variables.mapValues(\.value), to: folder + "/model.safetensors",
                                    metadata: ["format": "pt", "writer": "encore train"])
        try record("model.safetensors")

        try beforeWrite("optimizer.safetensors")
        var moments: [String: Tensor] = [:], steps: [String: Int] = [:]
        for (i, name) in model.names.enumerated() {
            let s = optimizer.state(at: i)
            steps[name] = s.steps
            if let m = s.m, let v = s.v { moments["m." + name] = m; moments["v." + name] = v }
        }
        let stepsJSON = String(decoding: try JSONSerialization.data(withJSONObject: steps, options: [.sortedKeys]), as: UTF8.self)
        try SafeTensorsWriter.write(moments, to: folder + "/optimizer.safetensors",
                                    metadata: ["writer": "encore train", "optimizer": "AdamW", "steps": stepsJSON])
        try record("optimizer.safetensors")

        try beforeWrite("checkpoint.json")
        let manifest: [String: Any] = [
            "format": TrainingCheckpoint.format, "step": step, "epoch": epoch, "order": order, "cursor": cursor,
            "shuffle_rng_state": String(rng.state), "dropout_rng_state": String(dropout.rngState),
            "settings": checkpointSettings, "data_fingerprint": String(dataFingerprint), "schedule": scheduleDescription,
            "files": sizes, "distillation": distillation?.description ?? "none",
        ]
        try AtomicFile.write(try JSONSerialization.data(withJSONObject: manifest, options: [.prettyPrinted, .sortedKeys]),
                             to: folder + "/checkpoint.json")
    }

    /// The settings a checkpoint must have been written with to be resumed by this trainer.
    var checkpointSettings: [String: Int] {
        ["batch_size": settings.batchSize, "accumulation": settings.accumulation, "examples": data.count,
         "encoder_seq_len": settings.encoderSeqLen, "decoder_seq_len": settings.decoderSeqLen, "shuffle": settings.shuffle ? 1 : 0,
         "bucket_by_length": settings.bucketByLength ? 1 : 0]
    }

    /// The learning-rate schedule and rate, which a resume must keep (other flags, e.g. --steps, would change them).
    var scheduleDescription: String {
        "\(schedule.kind.rawValue) lr=\(settings.learningRate) warmup=\(schedule.warmupSteps) total=\(schedule.totalSteps) decay_fraction=\(schedule.decayFraction)"
    }

    /// FNV-1a over every example's ids in order: resuming on other data (same count) is refused.
    var dataFingerprint: UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ x: Int) { h = (h ^ UInt64(bitPattern: Int64(x))) &* 0x100_0000_01b3 }
        for e in data {
            mix(e.source.count); e.source.forEach(mix)
            mix(e.target.count); e.target.forEach(mix)
        }
        return h
    }

    /// Restores the whole training state (parameters, AdamW moments and counts, step, epoch, data position,
    /// random streams) from a complete checkpoint `folder`, so the following steps are bit-identical to an
    /// unbroken run. Throws (naming the field) on an incomplete folder or one written with other settings.
    public func restoreCheckpoint(folder: String) throws {
        guard let m = TrainingCheckpoint.manifest(folder: folder) else {
            throw EncoreError(.invalidArgument, "\(folder): not a complete training checkpoint (checkpoint.json missing, damaged, or a file has the wrong size)")
        }
        let saved = m["settings"] as? [String: NSNumber] ?? [:]
        // checkpoints written before bucketing existed did not bucket
        for (key, want) in checkpointSettings where (saved[key]?.intValue ?? (key == "bucket_by_length" ? 0 : nil)) != want {
            throw EncoreError(.invalidArgument, "\(folder): checkpoint has \(key) = \(saved[key].map { "\($0)" } ?? "nothing"), this run has \(want)")
        }
        if let saved = m["schedule"] as? String, saved != scheduleDescription {
            throw EncoreError(.invalidArgument, "\(folder): checkpoint schedule '\(saved)', this run '\(scheduleDescription)'")
        }
        if let saved = m["distillation"] as? String, saved != (distillation?.description ?? "none") {
            throw EncoreError(.invalidArgument, "\(folder): checkpoint distillation settings '\(saved)', this run '\(distillation?.description ?? "none")'")
        }
        guard m["data_fingerprint"] as? String == String(dataFingerprint) else {
            throw EncoreError(.invalidArgument, "\(folder): checkpoint was written for other training data (data_fingerprint differs)")
        }
        guard let newStep = (m["step"] as? NSNumber)?.intValue, newStep >= 0,
              let newEpoch = (m["epoch"] as? NSNumber)?.intValue,
              let newOrder = (m["order"] as? [NSNumber])?.map(\.intValue), newOrder.allSatisfy({ data.indices.contains($0) }),
              let newCursor = (m["cursor"] as? NSNumber)?.intValue, newCursor >= 0, newCursor <= newOrder.count,
              let shuffle = (m["shuffle_rng_state"] as? String).flatMap(UInt64.init),
              let drop = (m["dropout_rng_state"] as? String).flatMap(UInt64.init) else {
            throw EncoreError(.invalidArgument, "\(folder)/checkpoint.json: step, epoch, order, cursor or RNG state missing or invalid")
        }
        let weights = try SafeTensorsFile(path: folder + "/model.safetensors")
        let opt = try SafeTensorsFile(path: folder + "/optimizer.safetensors")
        guard let stepsText = opt.metadata["steps"],
              let counts = try? JSONSerialization.jsonObject(with: Data(stepsText.utf8)) as? [String: NSNumber] else {
            throw EncoreError(.invalidArgument, "\(folder)/optimizer.safetensors: metadata 'steps' missing or invalid")
        }
        // read and check everything before changing anything
        var values: [Tensor] = [], states: [(Tensor?, Tensor?, Int)] = []
        for name in model.names {
            guard weights.tensors[name] != nil else { throw EncoreError(.invalidArgument, "\(folder)/model.safetensors: no tensor '\(name)'") }
            let t = try weights.tensor(name)
            guard t.shape == model[name].shape else {
                throw EncoreError(.invalidArgument, "\(folder)/model.safetensors: '\(name)' has shape \(t.shape), expected \(model[name].shape)")
            }
            values.append(t)
            let mt = opt.tensors["m." + name] == nil ? nil : try opt.tensor("m." + name)
            let vt = opt.tensors["v." + name] == nil ? nil : try opt.tensor("v." + name)
            for x in [mt, vt].compactMap({ $0 }) where x.shape != t.shape {
                throw EncoreError(.invalidArgument, "\(folder)/optimizer.safetensors: moment of '\(name)' has shape \(x.shape), expected \(t.shape)")
            }
            states.append((mt, vt, counts[name]?.intValue ?? 0))
        }
        for (i, name) in model.names.enumerated() {
            try optimizer.setState(at: i, m: states[i].0, v: states[i].1, steps: states[i].2)
            let dst = model[name].value
            for j in 0..<dst.count { dst.data[j] = values[i].data[j] }
        }
        step = newStep; epoch = newEpoch; order = newOrder; cursor = newCursor
        rng = SplitMix64(seed: shuffle)
        dropout.rngState = drop
    }
}
