import Foundation

/// A teacher for distillation: logits [B, Tt, Vt] for rows of equal length whose padding is the pad id
/// (the reference calls its decoder-only teacher with the matching attention mask).
public protocol DistillationTeacher: AnyObject {
    func logits(_ rows: [[Int]]) throws -> Tensor
}

/// Encore's decoder-only baseline can serve as a teacher (keys at pad ids are masked, as an attention mask would).
extension MuDecoderModel: DistillationTeacher {}

/// One distillation item as the reference `KDDataset._getitem_kd` builds it from a source and the target the
/// student generated for it:
///
///     target           = generated (ids > tokenizerSize → unk, the reference's `>`), right-padded to decoderSeqLen
///     teacher input    = source (first encoderSeqLen ids) LEFT-padded to encoderSeqLen ++ target
///     student decoder  = [BOS] + target[..<decoderSeqLen − 1]
///
/// so teacher position encoderSeqLen − 1 + t and student position t both predict target[t].
public struct DistillationItem: Equatable, Sendable {
    public var teacherIds: [Int]          // [encoderSeqLen + decoderSeqLen]
    public var studentDecoderIds: [Int]   // [decoderSeqLen]

    public init(source: [Int], generated: [Int], encoderSeqLen: Int, decoderSeqLen: Int, bos: Int, pad: Int,
                unk: Int, tokenizerSize: Int? = nil) {
        let src = Array(source.prefix(encoderSeqLen))
        var target = Array(generated.prefix(decoderSeqLen))
        if let tokenizerSize { target = target.map { $0 > tokenizerSize ? unk : $0 } }
        target += [Int](repeating: pad, count: decoderSeqLen - target.count)
        teacherIds = [Int](repeating: pad, count: encoderSeqLen - src.count) + src + target
        studentDecoderIds = [bos] + target.dropLast()
    }
}

/// What the distillation step adds to a ``Seq2SeqTrainer``: the reference `KDModel` with on-policy targets
/// sampled from the current student (`KDDataset._generate_target`: temperature 0.9, top-k 128, up to
/// decoderSeqLen tokens, from the unpadded source).
public struct DistillationSettings {
    public var teacher: DistillationTeacher
    /// Weight of the KL term; (1 − alpha) weighs the cross-entropy on the ground truth (`kd_alpha`, 0.9).
    public var alpha: Float = 0.9
    public var temperature: Float = 0.9
    public var topK = 128
    /// Generated ids above this become the unk id (the reference's `len(tokenizer)` with `>`); nil: none.
    public var tokenizerSize: Int? = nil
    public var unkTokenId = 0
    public init(teacher: DistillationTeacher) { self.teacher = teacher }
}
