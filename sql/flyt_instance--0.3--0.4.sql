/* flyt_instance 0.3 -> 0.4: the original services' wire contract, authorisation and provisioning (issue 11). */

\echo Use "ALTER EXTENSION flyt_instance UPDATE TO '0.4'" to load this file. \quit
