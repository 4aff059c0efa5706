// Package tc will hold the TC-ingress program that hands connections XDP
// answered with a SYN cookie to the slow-path proxy (DESIGN §7). It is empty
// until the slow path is built; the folder exists so the layout is settled.
package tc
