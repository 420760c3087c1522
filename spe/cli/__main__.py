from spe.cli.main import main

main()
