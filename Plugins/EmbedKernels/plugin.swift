import Foundation
import PackagePlugin

/// Turns every `Kernels/*.cl` file at the package root into a Swift string constant of the
/// target it is applied to (`EmbeddedKernels.sources["gemm"]` for `Kernels/gemm.cl`).
/// The folder is listed on each build, so adding a kernel is adding a file.
@main
struct EmbedKernels: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let kernels = context.package.directoryURL.appending(path: "Kernels")
        let files = try FileManager.default
            .contentsOfDirectory(at: kernels, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "cl" }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedKernels.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(files.count) OpenCL kernel files",
                executable: try context.tool(named: "EmbedKernelsTool").url,
                arguments: [output.path] + files.map(\.path),
                inputFiles: files,
                outputFiles: [output]
            )
        ]
    }
}
