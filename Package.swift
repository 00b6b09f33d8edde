// swift-tools-version:6.0
import PackageDescription

// Encore: encoder-decoder small language models in Swift.
//
// Module graph (arrows = imports):
//   encore (CLI) -> Encore -> EncoreKernels (C kernels), CBLAS (OpenBLAS on Linux, Accelerate on Apple),
//                             EncoreTokenizers (Foundation only: never sees tensors)
// Models never call BLAS or threads directly: only through Encore's ops layer.
let package = Package(
    name: "Encore",
    platforms: [.macOS(.v13), .iOS(.v16)],
    products: [
        .library(name: "Encore", targets: ["Encore"]),
        .executable(name: "encore", targets: ["encore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // OpenBLAS through Debian's libopenblas-dev (Linux). On Apple platforms Encore uses Accelerate instead.
        .systemLibrary(
            name: "CBLAS",
            path: "Sources/CBLAS",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // Hand-written C kernels over raw buffers (norms, activations, softmax, RoPE, attention pieces),
        // each with a plain reference twin; CPU features are picked at run time.
        .target(
            name: "EncoreKernels",
            path: "Sources/EncoreKernels",
            linkerSettings: [.linkedLibrary("m", .when(platforms: [.linux])),
                             .linkedLibrary("pthread", .when(platforms: [.linux]))]
        ),
        // Tokenizers (Hugging Face tokenizer.json, GGUF vocabularies, chat templates): Foundation only.
        .target(name: "EncoreTokenizers", path: "Sources/EncoreTokenizers"),
        .target(
            name: "Encore",
            dependencies: [
                "EncoreKernels",
                "EncoreTokenizers",
                .target(name: "CBLAS", condition: .when(platforms: [.linux])),
            ],
            path: "Sources/Encore",
            swiftSettings: [.swiftLanguageMode(.v5)],
            linkerSettings: [.linkedFramework("Accelerate", .when(platforms: [.macOS, .iOS]))]
        ),
        .executableTarget(
            name: "encore",
            dependencies: [
                "Encore",
                "EncoreTokenizers",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/encore",
            swiftSettings: [.swiftLanguageMode(.v5)]
        ),
        .testTarget(
            name: "EncoreTokenizersTests",
            dependencies: ["EncoreTokenizers"],
            path: "Tests/EncoreTokenizersTests",
            resources: [.copy("Fixtures")]
        ),
        // Test-only: counts the test process's heap allocations (decode must not allocate per step).
        .target(name: "AllocCounter", path: "Tests/AllocCounter"),
        .testTarget(
            name: "EncoreTests",
            dependencies: ["Encore", "EncoreKernels", "encore", "AllocCounter"],
            path: "Tests/EncoreTests",
            exclude: ["Fixtures"],
            swiftSettings: [.swiftLanguageMode(.v5)]
        ),
    ]
)
