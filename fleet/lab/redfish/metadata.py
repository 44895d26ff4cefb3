"""The lab Redfish service's ``$metadata``: the CSDL document naming the DMTF schemas it uses.

Clients and validators read it to find the schema (and version) of each ``@odata.type`` served;
it references DMTF's published schemas and defines nothing of its own.
"""

from __future__ import annotations

__all__ = ["METADATA", "SCHEMAS"]

#: Schema file (``http://redfish.dmtf.org/schemas/v1/NAME_v1.xml``) -> the versioned namespace served.
SCHEMAS: dict[str, str | None] = {
    "ServiceRoot": "v1_15_0", "ComputerSystem": "v1_20_0", "ComputerSystemCollection": None,
    "EthernetInterface": "v1_12_0", "EthernetInterfaceCollection": None, "Chassis": "v1_23_0",
    "ChassisCollection": None, "Thermal": "v1_7_0", "Power": "v1_7_1", "Sensor": "v1_7_0",
    "SensorCollection": None, "Manager": "v1_19_0", "ManagerCollection": None, "LogService": "v1_5_0",
    "LogServiceCollection": None, "LogEntry": "v1_15_0", "LogEntryCollection": None,
    "SessionService": "v1_1_9", "Session": "v1_7_0", "SessionCollection": None, "TaskService": "v1_2_0",
    "Task": "v1_7_0", "TaskCollection": None,
    "AccountService": "v1_15_0", "ManagerAccount": "v1_12_0", "ManagerAccountCollection": None, "Role": "v1_3_1",
    "RoleCollection": None, "Message": "v1_1_1", "Resource": None,
}


def _document() -> str:
    refs = []
    for name, version in SCHEMAS.items():
        includes = [f'    <edmx:Include Namespace="{name}"/>']
        if version:
            includes.append(f'    <edmx:Include Namespace="{name}.{version}"/>')
        refs.append(f'  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/{name}_v1.xml">\n'
                    + "\n".join(includes) + "\n  </edmx:Reference>")
    refs.append('  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/RedfishExtensions_v1.xml">\n'
                '    <edmx:Include Namespace="RedfishExtensions.v1_0_0" Alias="Redfish"/>\n  </edmx:Reference>')
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">\n'
            + "\n".join(refs) + "\n"
            '  <edmx:DataServices>\n'
            '    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="Service">\n'
            f'      <EntityContainer Name="Service" Extends="ServiceRoot.{SCHEMAS["ServiceRoot"]}.ServiceContainer"/>\n'
            '    </Schema>\n  </edmx:DataServices>\n</edmx:Edmx>\n')


METADATA = _document()
