"""Field controllers: NTCIP 1202 over SNMP, a simulated controller to test against, and the loop's field backend."""
