from cli.app import main

# Guarded: vLLM spawns its engine processes, and a spawned child imports this module again.
if __name__ == "__main__":
    main()
