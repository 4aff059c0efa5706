package impair

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -type impair_counter -type impair_dir -type impair_frame bpf impair.c -- -I/usr/include/x86_64-linux-gnu
