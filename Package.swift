// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "SigProp",
    products: [
        .library(name: "SigProp", targets: ["SigProp"]),
        .library(name: "SigPropMPI", targets: ["SigPropMPI"]),
        .executable(name: "train", targets: ["train"]),
        .executable(name: "doctor", targets: ["doctor"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // `swift package generate-documentation` for the DocC catalog.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // System libraries: the OpenCL ICD loader and OpenBLAS (CBLAS interface).
        .systemLibrary(
            name: "COpenCL",
            providers: [.apt(["ocl-icd-opencl-dev", "opencl-headers"])]
        ),
        .systemLibrary(
            name: "CBLAS",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .systemLibrary(
            name: "CZlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        // Open MPI, for training over several processes and machines (`SigPropMPI`); its
        // headers sit outside the compiler's search path, which pkg-config (pkgconf) gives.
        .systemLibrary(
            name: "CMPI",
            pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]
        ),

        // Kernels/*.cl -> Swift string constants, so binaries need no resource files.
        .executableTarget(name: "EmbedKernelsTool"),
        .plugin(
            name: "EmbedKernels",
            capability: .buildTool(),
            dependencies: ["EmbedKernelsTool"]
        ),

        .target(
            name: "SigProp",
            dependencies: ["COpenCL", "CBLAS", "CZlib"],
            plugins: ["EmbedKernels"]
        ),
        // The library's `ProcessGroup` on MPI: `train --distributed`.
        .target(name: "SigPropMPI", dependencies: ["SigProp", "CMPI"]),
        .executableTarget(
            name: "train",
            dependencies: [
                "SigProp", "SigPropMPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "doctor",
            dependencies: [
                "SigProp", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // The public API from a package's point of view: build, train, checkpoint, restore.
        .executableTarget(name: "sigprop-example", dependencies: ["SigProp"]),
        .testTarget(
            name: "SigPropTests",
            dependencies: ["SigProp"],
            resources: [.copy("Fixtures")]
        ),
    ]
)
