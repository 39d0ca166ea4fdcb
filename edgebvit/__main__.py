from edgebvit.cli import main

main()
