from refsync.cli import console

console()
