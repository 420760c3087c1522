from spe.cli import main

main()
