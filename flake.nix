{
  description = "Pipulate workstation: a FastHTML web app and JupyterLab side by side, sharing one durable state engine";

  # A NixOS release branch: Python 3.11, sqlite and the tools below at fixed versions.
  # flake.lock (committed) pins the exact nixpkgs commit of that branch, so every machine
  # gets the same one; `nix flake update` moves it, then commit the new flake.lock.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # The same set-up as ./install.sh (a .venv made from the lock file, pipulate installed
      # editable), then, when `start` is true, `pipulate up`. No git reset or git pull: local
      # changes are never touched.
      workstationShell = pkgs: { start }:
        let
          lib = pkgs.lib;
          python = pkgs.python311;
          # Wheels from PyPI (numpy, pyarrow, zstandard, ...) load these at run time on Linux.
          wheelLibs = [ pkgs.stdenv.cc.cc.lib pkgs.zlib ];
        in
        pkgs.mkShell ({
          name = if start then "pipulate-workstation" else "pipulate-quiet";
          # Python with sqlite3 built in; uv makes .venv fast; git and sqlite are used by the
          # tests and by people; chromium drives the browser tests (Linux only).
          packages = [ python pkgs.uv pkgs.git pkgs.sqlite pkgs.curl ]
            ++ lib.optionals pkgs.stdenv.isLinux [ pkgs.chromium ];
          PYTHON = "${python}/bin/python3.11";
          # uv must use the Python above, never download one of its own.
          UV_PYTHON_DOWNLOADS = "never";
          UV_PYTHON_PREFERENCE = "only-system";
          shellHook = ''
            pipulate_root="$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
            if [ ! -x "$pipulate_root/install.sh" ]; then
              echo "pipulate: run nix develop inside the workstation's checkout" >&2
            elif (cd "$pipulate_root" && ./install.sh setup); then
              export VIRTUAL_ENV="$pipulate_root/.venv"
              export PATH="$pipulate_root/.venv/bin:$PATH"
          '' + lib.optionalString start ''
              # PIPULATE_NO_UP=1 nix develop: the environment without starting the servers.
              if [ -z "''${PIPULATE_NO_UP:-}" ]; then
                pipulate up
              fi
          '' + ''
            fi
          '';
        } // lib.optionalAttrs pkgs.stdenv.isLinux {
          LD_LIBRARY_PATH = lib.makeLibraryPath wheelLibs;
        });
    in
    {
      devShells = forAllSystems (pkgs: {
        # `nix develop`: set up, then start the web app and JupyterLab.
        default = workstationShell pkgs { start = true; };
        # `nix develop .#quiet`: only set up the environment (for tests, editors, scripts).
        quiet = workstationShell pkgs { start = false; };
      });
    };
}
